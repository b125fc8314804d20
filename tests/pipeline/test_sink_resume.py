import pytest

from datagen.io.shards import ShardLimits
from datagen.io.storage import Location
from datagen.io.synthetic import make_labelled_pair_row
from datagen.io.tables import read_failures, read_manifest
from datagen.io.validate import validate
from datagen.pipeline import progress as P
from datagen.pipeline.commit import clean_partial_writes
from datagen.pipeline.progress import ResumeState
from datagen.pipeline.sink import write_rows
from schemas import columns as C
from stages.assemble import AssembleStage


def assembled(pairs, video="vidA", failed_pair=None, reason="invalid_json"):
    rows = []
    for p in pairs:
        row = make_labelled_pair_row(video, pair=p)
        if p == failed_pair:
            row.update({C.FAILED_STAGE: "caption", C.FAILED_REASON: reason, C.FAILED_DETAIL: "bad"})
        rows += C.batch_to_rows(AssembleStage()(C.rows_to_batch([row])))
    return rows


def write(loc, rows, prefix="001abcd-00000-w0000000a-"):
    return write_rows(loc, rows, prefix=prefix, limits=ShardLimits(max_samples=4))


def keys_of(loc):
    return read_manifest(loc).column("key").to_pylist()


def test_rows_become_valid_dataset_with_progress_and_failures(tmp_path):
    loc = Location.parse(str(tmp_path))
    counts = write(loc, assembled(range(3), failed_pair=1))
    assert counts == {"pairs": 2, "samples": 18, "failures": 1, "dropped": 1}
    assert validate(loc).ok
    fails = read_failures(loc).to_pylist()
    assert fails[0]["reason"] == "invalid_json" and fails[0]["key"] == "vidA_s0000_p0001"
    state = ResumeState.load(loc)
    assert state.done_pairs == {"vidA_s0000_p0000", "vidA_s0000_p0001", "vidA_s0000_p0002"}
    assert state.done_videos == {"vidA"}  # 1 pair per video stamped by the synthetic row... all done
    assert state.samples_committed == 18


def test_transient_failure_is_recorded_but_left_undone_for_the_next_run(tmp_path):
    loc = Location.parse(str(tmp_path))
    counts = write(loc, assembled(range(2), failed_pair=1, reason="backend_error"))
    assert counts == {"pairs": 1, "samples": 9, "failures": 1, "pending_retry": 1}
    assert read_failures(loc).column("reason").to_pylist() == ["backend_error"]
    assert ResumeState.load(loc).done_pairs == {"vidA_s0000_p0000"}  # p0001 is retried


def test_retry_failed_reopens_only_the_named_permanent_reason(tmp_path):
    loc = Location.parse(str(tmp_path))
    write(loc, assembled(range(2), failed_pair=1))
    assert ResumeState.load(loc, retry_failed=frozenset({"refusal"})).done_pairs == {"vidA_s0000_p0000",
                                                                                     "vidA_s0000_p0001"}
    assert ResumeState.load(loc, retry_failed=frozenset({"invalid_json"})).done_pairs == {"vidA_s0000_p0000"}


def test_undeclared_reason_stops_the_writer(tmp_path):
    with pytest.raises(KeyError, match="not declared in schemas/reasons.py"):
        write(Location.parse(str(tmp_path)), assembled([0], failed_pair=0, reason="made_up"))


def test_kill_before_the_commit_record_rolls_the_attempt_back(tmp_path, monkeypatch):
    loc = Location.parse(str(tmp_path))
    rows = assembled(range(2))

    def killed(*a, **k):
        raise KeyboardInterrupt("killed after shards were committed")

    monkeypatch.setattr("datagen.pipeline.sink.write_commit_record", killed)
    with pytest.raises(KeyboardInterrupt):
        write(loc, rows)
    monkeypatch.undo()
    assert len(keys_of(loc)) == 18  # shards and manifest parts of the attempt are there, uncommitted
    assert clean_partial_writes(loc, ["002abcd"]) == []  # another attempt's files: not ours to judge
    removed = clean_partial_writes(loc, ["001abcd"])
    assert {r.split("/")[0] for r in removed} == {"shards", "manifest", "pairs"} and keys_of(loc) == []
    assert ResumeState.load(loc).done_pairs == set()
    counts = write(loc, rows, prefix="002abcd-00000-w0000000b-")
    assert counts["samples"] == 18
    keys = keys_of(loc)
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
    assert len(keys_of(loc)) == 9
    assert validate(loc).ok


def test_video_failure_marks_video_done_by_uri(tmp_path):
    loc = Location.parse(str(tmp_path))
    row = {C.VIDEO_URI: "file:///v/zero.mp4", C.VIDEO_ID: None, C.FAILED_STAGE: "ingest",
           C.FAILED_REASON: "empty_file", C.FAILED_DETAIL: "0 bytes"}
    write(loc, [row])
    state = ResumeState.load(loc)
    assert state.is_video_done(None, "file:///v/zero.mp4") and not state.is_video_done(None, "file:///v/ok.mp4")
    assert P.read_progress(loc).num_rows == 1


def _sink(tmp_path, **kw):
    from datagen.pipeline.sink import DatasetSink

    return DatasetSink(str(tmp_path), ShardLimits(max_samples=4), 10, attempt="001a", **kw)


def test_retried_write_task_commits_once(tmp_path, monkeypatch):
    """Ray re-runs a write task from scratch when its worker dies: a new attempt, a new
    prefix; the dead attempt's files have no commit record and go when the writes end."""
    from types import SimpleNamespace

    import pyarrow as pa

    loc = Location.parse(str(tmp_path))
    sink = _sink(tmp_path)
    block = pa.Table.from_pylist(assembled(range(2)))
    monkeypatch.setattr("datagen.pipeline.sink.write_commit_record",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt("worker died")))
    with pytest.raises(KeyboardInterrupt):
        sink.write([block], SimpleNamespace(task_idx=7))
    monkeypatch.undo()
    counts = sink.write([block], SimpleNamespace(task_idx=7))  # the retry
    assert counts["samples"] == 18 and len(keys_of(loc)) == 36  # both attempts' shards, one committed
    sink.on_write_complete(SimpleNamespace(write_returns=[counts]))
    keys = keys_of(loc)
    assert len(keys) == len(set(keys)) == 18 and validate(loc).ok


def test_a_retry_of_a_task_that_had_committed_writes_nothing(tmp_path, monkeypatch):
    """The worker dies after its commit record, before returning (its node is lost): Ray
    retries the task, which finds the claim's record and returns its counts."""
    from types import SimpleNamespace

    import pyarrow as pa

    from datagen.pipeline import sink as sink_mod
    from datagen.pipeline.commit import WriteClaims

    loc = Location.parse(str(tmp_path))
    sink = _sink(tmp_path, claims=WriteClaims())
    block = pa.Table.from_pylist(assembled(range(2)))
    real = sink_mod.write_rows

    def commit_then_die(*a, **k):
        real(*a, **k)
        raise KeyboardInterrupt("worker died after committing")

    monkeypatch.setattr(sink_mod, "write_rows", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        sink.write([block], SimpleNamespace(task_idx=3))
    monkeypatch.undo()
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    counts = sink.write([block], SimpleNamespace(task_idx=3))  # the retry
    assert counts["samples"] == 18 and counts["pairs"] == 2 and counts["already_committed"] == 1
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == files  # wrote nothing
    other = sink.write([pa.Table.from_pylist(assembled(range(2, 4)))], SimpleNamespace(task_idx=4))
    assert "already_committed" not in other  # another task is not mistaken for it
    keys = keys_of(loc)
    assert len(keys) == len(set(keys)) == 36 and validate(loc).ok


def test_storage_error_retries_the_attempt_and_a_full_disk_stops_at_once(tmp_path, monkeypatch):
    import errno
    from types import SimpleNamespace

    import pyarrow as pa

    from datagen.io.faults import StorageFailed
    from datagen.pipeline import commit

    loc = Location.parse(str(tmp_path))
    block = pa.Table.from_pylist(assembled(range(2)))
    calls = []

    def flaky(loc_, prefix, rows, errno_=errno.ECONNRESET):
        calls.append(prefix)
        if len(calls) <= 2:
            raise OSError(errno_, "connection reset by the store")
        commit.write_commit_record(loc_, prefix, rows)

    monkeypatch.setattr("datagen.pipeline.sink.write_commit_record", flaky)
    sink = _sink(tmp_path, storage_retries=2, storage_backoff_s=0.0)
    counts = sink.write([block], SimpleNamespace(task_idx=0))
    assert len(calls) == 3 and len(set(calls)) == 3  # each attempt under its own prefix
    sink.on_write_complete(SimpleNamespace(write_returns=[counts]))
    assert sorted(keys_of(loc)) == sorted(set(keys_of(loc))) and len(keys_of(loc)) == 18

    full = lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))  # noqa: E731
    monkeypatch.setattr("datagen.pipeline.sink.write_commit_record", full)
    with pytest.raises(StorageFailed, match="is full .*free space, then run the same command again"):
        _sink(tmp_path / "other", storage_retries=5, storage_backoff_s=60.0).write([block], SimpleNamespace(task_idx=0))


def test_files_of_other_writers_and_older_runs_are_never_rolled_back(tmp_path):
    """Old per-task prefixes (before commit records) and copies without their commit
    records (relabel copies shards byte for byte) stay."""
    loc = Location.parse(str(tmp_path))
    write_rows(loc, assembled([0]), prefix="003abcd-00002-", limits=ShardLimits(max_samples=4))
    (tmp_path / "progress" / "003abcd-00002-commit.parquet").rename(tmp_path / "progress" / "003abcd-00002-0a1b2c3d4e5f.parquet")
    assert clean_partial_writes(loc, ["003abcd"]) == []
    assert len(keys_of(loc)) == 9 and ResumeState.load(loc).done_pairs == {"vidA_s0000_p0000"}


def test_progress_parts_without_the_reason_column_still_load(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "progress").mkdir()
    old = pa.table({"pair_key": ["v_s0000_p0000"], "video_id": ["v"], "video_uri": ["file:///v.mp4"],
                    "pairs_in_video": pa.array([1], pa.int32()), "status": ["failed"],
                    "made": pa.array([[]], pa.list_(pa.string())), "skipped_json": [None]})
    pq.write_table(old, tmp_path / "progress" / "001-00000-abcdef012345.parquet")
    state = ResumeState.load(Location.parse(str(tmp_path)))
    assert state.done_pairs == {"v_s0000_p0000"} and state.done_videos == {"v"}
