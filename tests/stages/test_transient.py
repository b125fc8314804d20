"""A store that does not answer is the world failing (transient), a wrong path is the input (permanent)."""
import pytest

from schemas import columns as C
from schemas.reasons import kind_of
from stages.ingest import IngestConfig, IngestStage
from tests.conftest import free_port


def test_unreachable_object_store_is_a_transient_storage_error(monkeypatch):
    pytest.importorskip("s3fs")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    opts = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "key": "k", "secret": "s"}  # nothing listens
    out = IngestStage(IngestConfig(storage_options=opts))({C.VIDEO_URI: ["s3://videos/clip.mp4"]})
    assert out[C.FAILED_REASON] == ["storage_error"] and kind_of("storage_error") == "transient"
    assert "127.0.0.1" in out[C.FAILED_DETAIL][0]


def test_missing_local_file_stays_permanent(tmp_path):
    out = IngestStage()({C.VIDEO_URI: [str(tmp_path / "nope.mp4")]})
    assert out[C.FAILED_REASON] == ["not_found"] and kind_of("not_found") == "permanent"
