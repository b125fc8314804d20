"""Write, validate and read a dataset on s3:// served by a real S3 API server (moto) on 127.0.0.1."""
import socket
import subprocess
import sys
import time

import pytest

from datagen.io.reader import iter_samples
from datagen.io.validate import validate
from tests.conftest import free_port
from tests.io.conftest import PER_TASK, write_every_task


@pytest.fixture(scope="module")
def s3_server():
    pytest.importorskip("moto.server")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait until the server accepts connections
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("moto server exited at start")
            time.sleep(0.1)
    yield endpoint
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": s3_server, "AWS_ENDPOINT_URL_S3": s3_server}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="datagen-test")
    import fsspec

    fsspec.config.conf.pop("s3", None)
    return s3_server


def test_write_validate_read_on_s3(s3_env):
    import boto3

    url = "s3://datagen-test/runs/v1"
    samples = write_every_task(url)
    objects = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_env)
               .list_objects_v2(Bucket="datagen-test", Prefix="runs/v1/")["Contents"]]
    assert any(k.startswith("runs/v1/shards/object_insertion/") and k.endswith(".tar") for k in objects)
    assert any(k.startswith("runs/v1/manifest/") for k in objects)
    assert not any(".tmp-" in k for k in objects)  # temporary names never survive a clean write

    report = validate(url)
    assert report.ok, report.problems
    assert report.samples == len(samples)

    back = {s.key: s for s in iter_samples(url, tasks=["depth_to_image"])}
    assert len(back) == PER_TASK
    for s in samples:
        if s.key in back:
            assert back[s.key].media == s.media


def test_validate_catches_missing_shard_on_s3(s3_env):
    import boto3

    url = "s3://datagen-test/runs/v2"
    write_every_task(url)
    boto3.client("s3", endpoint_url=s3_env).delete_object(
        Bucket="datagen-test", Key="runs/v2/shards/edge_to_image/000000.tar")
    report = validate(url)
    assert not report.ok
    assert any("shards/edge_to_image/000000.tar: listed in the manifest" in p for p in report.problems)
