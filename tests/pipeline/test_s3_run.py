"""A run with its videos and its output on a real S3 API server (moto, behind a counting
layer): each video's bytes are fetched once, each shard is one PUT (no temporary object,
copy and delete), and a secret planted in the config's storage_options appears in no
file of the output and in no log line."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from datagen.io.validate import validate
from schemas.tasks import TASKS
from tests.conftest import free_port
from tests.pipeline.conftest import REAL_VIDEOS, tiny_config_dict

pytestmark = pytest.mark.slow
PLANTED_KEY, PLANTED_SECRET = "AKIAPLANTEDKEY0000001", "planted-Secret/0123456789abcdef"


@pytest.fixture(scope="module")
def counting_s3():
    pytest.importorskip("moto.server")
    from tests.s3_counting import counting_s3_server

    with counting_s3_server(free_port()) as endpoint:
        yield endpoint


def _objects(s3, bucket: str) -> dict[str, bytes]:
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_s3_run_fetches_each_video_once_puts_each_shard_once_and_leaks_no_secret(counting_s3, tmp_path, tiny_models,
                                                                                 monkeypatch):
    import boto3
    import fsspec

    from tests.s3_counting import counts

    creds = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
             "AWS_ENDPOINT_URL": counting_s3, "AWS_ENDPOINT_URL_S3": counting_s3}  # the output's credential chain
    for k, v in creds.items():
        monkeypatch.setenv(k, v)
    fsspec.config.conf.pop("s3", None)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # an instance made earlier in this process holds another endpoint
    env = {**os.environ, "DATAGEN_FETCH_DIR": str(tmp_path / "fetch")}  # a cold node cache: nothing fetched before
    s3 = boto3.client("s3", endpoint_url=counting_s3, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    for bucket in ("videos", "out"):
        s3.create_bucket(Bucket=bucket)
    video_bytes = 0
    for v in REAL_VIDEOS:
        s3.upload_file(v, "videos", f"in/{Path(v).name}")
        video_bytes += Path(v).stat().st_size
    opts = {"key": PLANTED_KEY, "secret": PLANTED_SECRET,
            "client_kwargs": {"endpoint_url": counting_s3, "region_name": "us-east-1"}}
    # no model stage: what is measured here is storage, and actors would only add start-up time
    tasks = {t.name: 0.0 for t in TASKS}
    tasks.update(edge_detection=1.0, text_to_image=0.0)
    cfg = tiny_config_dict(tiny_models, labels=["edges"], assemble={"tasks": tasks}, write={"min_rows_per_write": 20},
                           ingest={"storage_options": opts}, shots={"storage_options": opts},
                           pairs={"storage_options": opts})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    counts(counting_s3, reset=True)
    res = subprocess.run([sys.executable, "-m", "datagen", "run", "--config", str(tmp_path / "config.yaml"),
                          "--input", "s3://videos/in/", "--output", "s3://out/ds"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    served = counts(counting_s3)
    vids, out = served["videos"], served["out"]

    # each video's bytes crossed the network once (ingest, shots and pairs share the node's copy)
    assert vids["bytes_out"] <= 1.05 * video_bytes, (vids["bytes_out"], video_bytes)
    assert vids["GET"] == len(REAL_VIDEOS)

    objects = _objects(s3, "out")
    tars = [k for k in objects if k.endswith(".tar")]
    assert tars and out["PUT .tar"] == len(tars)  # one PUT per shard ...
    assert out.get("COPY", 0) == 0 and out.get("POST", 0) == 0  # ... no copy, no multipart
    assert out.get("DELETE .tar", 0) == 0
    assert not any(".tmp-" in k for k in objects)
    report = validate("s3://out/ds")
    assert report.ok and report.samples > 0, report.problems

    # the planted credentials: in no output object (Parquet decoded too: it is compressed), no log line
    texts = [res.stdout, res.stderr]
    for key, data in objects.items():
        texts.append(data.decode("latin-1"))
        if key.endswith(".parquet"):
            texts.append(str(pq.read_table(io.BytesIO(data)).to_pylist()))
    for secret in (PLANTED_KEY, PLANTED_SECRET):
        assert not any(secret in t for t in texts), f"{secret} leaked"
    saved = yaml.safe_load(objects["ds/config.yaml"])
    assert saved["ingest"]["storage_options"]["secret"] == "<redacted>"
    assert saved["ingest"]["storage_options"]["client_kwargs"]["endpoint_url"] == counting_s3
