"""Compaction merges small table parts; readers see the same rows before, during (killed
midway) and after; the resumed compaction finishes; committed shards stay committed."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.io import compact as K
from datagen.io.reader import iter_samples
from datagen.io.shards import FAILURES_DIR, MANIFEST_DIR, PROGRESS_DIR, ShardLimits
from datagen.io.storage import Location
from datagen.io.tables import read_failures, read_manifest
from datagen.io.validate import validate
from datagen.pipeline.commit import clean_partial_writes, committed_prefixes, write_prefix
from datagen.pipeline.progress import ResumeState, read_progress
from datagen.pipeline.sink import write_rows
from tests.pipeline.test_sink_resume import assembled


ATTEMPT = "001abcd"


def _dataset(tmp_path, tasks: int = 6) -> Location:
    """Many write tasks, each with its own small manifest, failures and progress parts."""
    loc = Location.parse(str(tmp_path / "ds"))
    for t in range(tasks):
        write_rows(loc, assembled(range(2), video=f"vid{t}", failed_pair=1), prefix=write_prefix(ATTEMPT, t),
                   limits=ShardLimits(max_samples=4))
    return loc


def _rows(loc: Location) -> tuple:
    by_key = lambda t, col: sorted(t.to_pylist(), key=lambda r: str(r[col]))  # noqa: E731
    samples = sorted((s.key, s.record.to_json()) for s in iter_samples(loc.url))
    return (by_key(read_manifest(loc), "key"), by_key(read_failures(loc), "key"),
            by_key(read_progress(loc), "pair_key"), samples)


def _parts(loc: Location) -> dict[str, int]:
    return {d: len(loc.glob(f"{d}/*.parquet")) for d in (MANIFEST_DIR, FAILURES_DIR, PROGRESS_DIR)}


def test_compaction_keeps_every_row_and_merges_parts(tmp_path):
    loc = _dataset(tmp_path)
    before, parts = _rows(loc), _parts(loc)
    assert min(parts.values()) >= 6
    results = K.compact_dataset(loc)
    assert _parts(loc) == {MANIFEST_DIR: 1, FAILURES_DIR: 1, PROGRESS_DIR: 1}
    assert [r.parts_after for r in results] == [1, 1, 1]
    assert _rows(loc) == before
    # the merged commit records still commit their write attempts: the run's own rollback deletes nothing
    assert len(committed_prefixes(loc)) == 6
    assert clean_partial_writes(loc, [ATTEMPT]) == []
    assert _rows(loc) == before and validate(loc).ok
    state = ResumeState.load(loc)
    assert len(state.done_pairs) == 12 and state.samples_committed == len(before[0])
    assert K.compact_dataset(loc)[0].parts_after == 1  # nothing left to merge: a no-op


@pytest.mark.parametrize("kill_at", ["before_merged_part", "while_deleting_inputs"])
def test_compaction_killed_midway_reads_the_same_and_then_completes(tmp_path, monkeypatch, kill_at):
    loc = _dataset(tmp_path)
    before, parts = _rows(loc), _parts(loc)

    class Killed(BaseException):
        pass

    if kill_at == "before_merged_part":
        def killed(*a, **k):
            raise Killed()

        monkeypatch.setattr(K, "write_parquet", killed)
    else:
        removed = []
        real_remove = Location.remove

        def remove_then_die(self, rel):
            if rel.endswith(".parquet") and removed:
                raise Killed()
            removed.append(rel)
            real_remove(self, rel)

        monkeypatch.setattr(Location, "remove", remove_then_die)
    with pytest.raises(Killed):
        K.compact_dataset(loc)
    monkeypatch.undo()
    assert loc.exists(f"{MANIFEST_DIR}/{K.JOURNAL}")  # the manifest merge was in flight
    assert _rows(loc) == before  # every reader: each row exactly once
    assert validate(loc).ok
    res = CliRunner().invoke(app, ["compact", loc.url])
    assert res.exit_code == 0, res.output
    assert not loc.exists(f"{MANIFEST_DIR}/{K.JOURNAL}")
    assert _parts(loc) == {MANIFEST_DIR: 1, FAILURES_DIR: 1, PROGRESS_DIR: 1}
    assert sum(parts.values()) > 3 and _rows(loc) == before
    assert clean_partial_writes(loc, [ATTEMPT]) == [] and _rows(loc) == before
