"""Expanding --input sources: directories, globs, list files, object storage, missing paths."""
from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datagen import UserError
from datagen.video.probe import video_id
from datagen.video.sources import expand_sources

ASSETS = Path(__file__).resolve().parents[2] / "datagen" / "assets" / "videos"


@pytest.fixture()
def tree(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(ASSETS / "box.mp4", tmp_path / "a" / "box.mp4")
    shutil.copy(ASSETS / "tree.avi", tmp_path / "a" / "b" / "tree.avi")
    (tmp_path / "a" / "notes.txt").write_text("not a video")
    return tmp_path


def test_directory_is_searched_recursively_for_video_files(tree):
    assert expand_sources(str(tree / "a")) == [str(tree / "a" / "b" / "tree.avi"), str(tree / "a" / "box.mp4")]


def test_glob_and_list_files(tree):
    assert expand_sources(str(tree / "a" / "*.mp4")) == [str(tree / "a" / "box.mp4")]
    (tree / "list.txt").write_text("# comment\na/box.mp4\n\n" + str(tree / "a" / "b" / "tree.avi") + "\n")
    assert expand_sources(str(tree / "list.txt")) == [str(tree / "a" / "box.mp4"), str(tree / "a" / "b" / "tree.avi")]
    (tree / "list.csv").write_text("id,uri\n1,a/box.mp4\n2,a/b/tree.avi\n")
    assert expand_sources(str(tree / "list.csv")) == [str(tree / "a" / "box.mp4"), str(tree / "a" / "b" / "tree.avi")]
    pq.write_table(pa.table({"video_uri": ["a/b/tree.avi"]}), tree / "list.parquet")
    assert expand_sources([str(tree / "list.parquet"), str(tree / "list.txt")]) == [
        str(tree / "a" / "b" / "tree.avi"), str(tree / "a" / "box.mp4")]


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        expand_sources(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="matches no video"):
        expand_sources(str(tmp_path / "*.mp4"))


def test_video_id_is_content_based(tree, tmp_path):
    moved = tmp_path / "renamed.bin"
    shutil.copy(tree / "a" / "box.mp4", moved)
    assert video_id(str(moved)) == video_id(str(tree / "a" / "box.mp4"))
    assert video_id(str(moved)) != video_id(str(tree / "a" / "b" / "tree.avi"))


@pytest.mark.slow
def test_s3_prefix_lists_and_hashes_like_local(tree):
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key="s",
                          region_name="us-east-1")
        s3.create_bucket(Bucket="corpus")
        s3.upload_file(str(tree / "a" / "box.mp4"), "corpus", "videos/box.mp4")
        s3.put_object(Bucket="corpus", Key="videos/readme.md", Body=b"x")
        opts = {"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
        uris = expand_sources("s3://corpus/videos/", **opts)
        assert uris == ["s3://corpus/videos/box.mp4"]
        assert video_id(uris[0], **opts) == video_id(str(tree / "a" / "box.mp4"))
        from stages.ingest import PROBE, IngestConfig, IngestStage

        remote = IngestStage(IngestConfig(storage_options=opts)).process([{"video_uri": uris[0]}])[0]
        local = IngestStage().process([{"video_uri": str(tree / "a" / "box.mp4")}])[0]
        assert remote.get("failed_reason") is None and remote[PROBE] == local[PROBE]
    finally:
        server.stop()
