"""The run's fingerprint covers what decides the samples, not where they are served or stored."""
from __future__ import annotations

import pytest

from datagen.config import from_dict, to_dict
from datagen.pipeline.config import PipelineConfig, load_config


def fingerprint(**changes: dict) -> str:
    cfg = to_dict(load_config("cpu"))
    for section, values in changes.items():
        cfg[section].update(values)
    return from_dict(PipelineConfig, cfg).output_fingerprint()


@pytest.mark.parametrize("section,values", [
    ("caption", {"endpoints": ["http://10.0.0.7:9000/v1"]}),  # the crashed server came back elsewhere
    ("caption", {"request_timeout_s": 30.0, "requests_in_flight": 4, "retry_backoff_s": 5.0, "device": "cuda:1"}),
    ("caption", {"resources": {"num_gpus": 0.5, "concurrency": 4, "batch_size": 8}}),
    ("ingest", {"storage_options": {"endpoint_url": "http://minio:9000", "key": "k", "secret": "s"}}),
    ("write", {"max_samples_per_shard": 10, "min_rows_per_write": 1, "storage_retries": 0}),
    ("ray", {"address": "ray://head:10001", "num_cpus": 64}),
    ("depth", {"device": "cpu"}),
])
def test_serving_and_storage_settings_do_not_change_it(section, values):
    assert fingerprint(**{section: values}) == fingerprint()


@pytest.mark.parametrize("section,values", [
    ("caption", {"model": "Qwen/Qwen2.5-VL-7B-Instruct"}),
    ("caption", {"revision": "abc123"}),
    ("caption", {"temperature": 0.3}),
    ("caption", {"max_text_chars": 120}),
    ("depth", {"model": "depth-anything/Depth-Anything-V2-Base-hf"}),
    ("pairs", {"short_side_px": 256}),
])
def test_what_decides_the_samples_changes_it(section, values):
    assert fingerprint(**{section: values}) != fingerprint()
