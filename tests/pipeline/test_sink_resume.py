import pytest

from datagen.io.shards import ShardLimits
from datagen.io.storage import Location
from datagen.io.synthetic import make_labelled_pair_row
from datagen.io.tables import read_failures, read_manifest
from datagen.io.validate import validate
from datagen.pipeline import progress as P
from datagen.pipeline.progress import ResumeState, clean_partial_writes
from datagen.pipeline.sink import write_rows
from schemas import columns as C
from stages.assemble import AssembleStage


def assembled(pairs, video="vidA", failed_pair=None):
    rows = []
    for p in pairs:
        row = make_labelled_pair_row(video, pair=p)
        if p == failed_pair:
            row.update({C.FAILED_STAGE: "caption", C.FAILED_REASON: "invalid_json", C.FAILED_DETAIL: "bad"})
        rows += C.batch_to_rows(AssembleStage()(C.rows_to_batch([row])))
    return rows


def write(loc, rows, prefix="t-", skip=frozenset()):
    return write_rows(loc, rows, prefix=prefix, limits=ShardLimits(max_samples=4), skip_keys=skip)


def test_rows_become_valid_dataset_with_progress_and_failures(tmp_path):
    loc = Location.parse(str(tmp_path))
    counts = write(loc, assembled(range(3), failed_pair=1))
    assert counts == {"pairs": 2, "samples": 18, "failures": 1}
    assert validate(loc).ok
    fails = read_failures(loc).to_pylist()
    assert fails[0]["reason"] == "invalid_json" and fails[0]["key"] == "vidA_s0000_p0001"
    state = ResumeState.load(loc)
    assert state.done_pairs == {"vidA_s0000_p0000", "vidA_s0000_p0001", "vidA_s0000_p0002"}
    assert state.done_videos == {"vidA"}  # 1 pair per video stamped by the synthetic row... all done
    assert state.committed_keys == set()  # every committed key belongs to a done pair


def test_crash_before_progress_is_resumed_without_duplicates(tmp_path, monkeypatch):
    loc = Location.parse(str(tmp_path))
    rows = assembled(range(2))

    def killed(*a, **k):
        raise KeyboardInterrupt("killed after shards were committed")

    monkeypatch.setattr("datagen.pipeline.sink.write_progress", killed)
    with pytest.raises(KeyboardInterrupt):
        write(loc, rows)
    monkeypatch.undo()
    state = ResumeState.load(loc)
    assert state.done_pairs == set() and len(state.committed_keys) == 18
    counts = write(loc, rows, prefix="t2-", skip=frozenset(state.committed_keys))
    assert counts.get("samples", 0) == 0 and counts["skipped_committed"] == 18
    keys = read_manifest(loc).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 18
    assert validate(loc).ok
    assert ResumeState.load(loc).done_pairs == {"vidA_s0000_p0000", "vidA_s0000_p0001"}


def test_partial_files_are_cleaned(tmp_path):
    loc = Location.parse(str(tmp_path))
    write(loc, assembled([0]))
    d = tmp_path / "shards" / "instruction_edit"
    (d / "000777.tar.tmp-abc").write_bytes(b"partial")
    (d / "000778.tar").write_bytes(b"renamed but manifest part never written")
    removed = clean_partial_writes(loc)
    assert sorted(removed) == ["shards/instruction_edit/000777.tar.tmp-abc", "shards/instruction_edit/000778.tar"]
    assert validate(loc).ok


def test_video_failure_marks_video_done_by_uri(tmp_path):
    loc = Location.parse(str(tmp_path))
    row = {C.VIDEO_URI: "file:///v/zero.mp4", C.VIDEO_ID: None, C.FAILED_STAGE: "ingest",
           C.FAILED_REASON: "empty_file", C.FAILED_DETAIL: "0 bytes"}
    write(loc, [row])
    state = ResumeState.load(loc)
    assert state.is_video_done(None, "file:///v/zero.mp4") and not state.is_video_done(None, "file:///v/ok.mp4")
    assert P.read_progress(loc).num_rows == 1


def test_retried_write_task_skips_what_its_first_attempt_committed(tmp_path, monkeypatch):
    """Ray re-runs a write task from scratch when its node dies; same task index, same prefix."""
    from types import SimpleNamespace

    import pyarrow as pa

    from datagen.pipeline.sink import DatasetSink

    loc = Location.parse(str(tmp_path))
    rows = assembled(range(2))
    sink = DatasetSink(str(tmp_path), ShardLimits(max_samples=4), None, 10, attempt="001a")
    block = pa.Table.from_pylist(rows)
    monkeypatch.setattr("datagen.pipeline.sink.write_progress",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("node died")))
    with pytest.raises(KeyboardInterrupt):
        sink.write([block], SimpleNamespace(task_idx=7))
    monkeypatch.undo()
    counts = sink.write([block], SimpleNamespace(task_idx=7))  # the retry
    assert counts.get("samples", 0) == 0 and counts["skipped_committed"] == 18
    keys = read_manifest(loc).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 18
