"""Credentials in storage_options never reach config.yaml or the fingerprint; other values do."""
from __future__ import annotations

import yaml

from datagen.config import to_dict
from datagen.io.storage import Location
from datagen.pipeline.config import load_config
from datagen.pipeline.run import CONFIG_FILE, check_run_config
from datagen.redact import REDACTED, redact


def test_credential_values_are_replaced_at_any_depth():
    opts = {"key": "AKIA1", "secret": "s3cr3t", "token": None, "anon": False,
            "client_kwargs": {"endpoint_url": "http://x", "aws_session_token": "tok"}, "my_api_key": "k"}
    out = redact({"ingest": {"storage_options": opts}, "caption": {"max_new_tokens": 512}})
    so = out["ingest"]["storage_options"]
    assert so["key"] == so["secret"] == so["client_kwargs"]["aws_session_token"] == so["my_api_key"] == REDACTED
    assert so["token"] is None and so["anon"] is False and so["client_kwargs"]["endpoint_url"] == "http://x"
    assert out["caption"]["max_new_tokens"] == 512  # "_tokens" is not a credential


def test_saved_config_and_fingerprint_hold_no_secret(tmp_path):
    loc = Location.parse(str(tmp_path / "ds"))
    cfg = load_config("cpu", ["ingest.storage_options.secret=planted-xyz", "ingest.storage_options.anon=false"])
    run, _ = check_run_config(loc, cfg)
    assert "planted-xyz" not in (tmp_path / "ds" / CONFIG_FILE).read_text()
    saved = yaml.safe_load((tmp_path / "ds" / CONFIG_FILE).read_text())
    assert saved["ingest"]["storage_options"] == {"secret": REDACTED, "anon": False}
    assert "planted-xyz" not in (tmp_path / "ds" / "run.json").read_text()
    rotated = load_config("cpu", ["ingest.storage_options.secret=rotated-abc", "ingest.storage_options.anon=false"])
    assert rotated.output_fingerprint() == run["fingerprint"]  # a new key resumes the same dataset
    assert to_dict(rotated)["ingest"]["storage_options"]["secret"] == "rotated-abc"  # the run itself keeps it
