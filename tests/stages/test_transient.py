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


class Flaky:
    """A model stage whose model fails on some rows for the first `failures` calls (a CUDA hiccup)."""

    def __new__(cls, failures: int, bad: set[int], reason: str = "model_error"):
        from stages.base import Stage, fail

        class FlakyStage(Stage):
            name = "flaky"
            model_retries = 2
            retry_backoff_s = 0.0  # the backoff's length is not what is tested

            def __init__(self):
                self.calls: list[list[int]] = []

            def process(self, rows):
                self.calls.append([r["n"] for r in rows])
                failing = len(self.calls) <= failures
                return [fail(r, self.name, reason, "CUDA error: an illegal memory access") if failing and r["n"] in bad
                        else dict(r, label=r["n"] * 10) for r in rows]

        return FlakyStage()


def test_a_model_error_is_retried_in_the_run_and_only_its_row():
    stage = Flaky(failures=1, bad={1, 3})
    out = stage({"n": [0, 1, 2, 3]})
    assert out["label"] == [0, 10, 20, 30] and out[C.FAILED_REASON] == [None] * 4  # healed, order kept
    assert stage.calls == [[0, 1, 2, 3], [1, 3]]
    assert "_stage_input_index" not in out


def test_a_row_that_keeps_failing_is_left_transient_for_the_next_run():
    stage = Flaky(failures=99, bad={2})
    out = stage({"n": [0, 1, 2]})
    assert out[C.FAILED_REASON] == [None, None, "model_error"] and kind_of("model_error") == "transient"
    assert stage.calls == [[0, 1, 2], [2], [2]]  # 1 + model_retries tries


def test_a_permanent_reason_is_not_retried():
    stage = Flaky(failures=99, bad={0}, reason="bad_image")
    out = stage({"n": [0, 1]})
    assert out[C.FAILED_REASON] == ["bad_image", None] and stage.calls == [[0, 1]]
