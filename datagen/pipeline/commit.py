"""The run's commit protocol: a write task's files count only once its commit record exists.

Why every pair is committed exactly once, even when Ray Data splits blocks, retries a
write task, or loses a node (or the driver) mid-write:

1. One row per pair. assemble emits a single row holding all of a pair's task samples
   (stages/assemble.py); a failed pair or video is a single row too. Ray Data splits and
   merges blocks only between rows, so one pair is always inside one write task.
2. One prefix per write attempt. Each call of the sink's `write` draws a fresh prefix
   `{attempt}-{task_idx}-w{token}-` and writes every file under it: shards
   (`shards/{task}/{P}NNNNNN.tar`, each renamed from a temporary name when complete), one
   manifest part per shard (`manifest/{task}-{P}NNNNNN.parquet`), failures parts
   (`failures/{P}<hex>.parquet`), and LAST its commit record `progress/{P}commit.parquet`:
   one progress row per pair (or video) it finished. A Ray retry of the same task is a
   new attempt with a new prefix: two attempts never write the same name.
3. Roll back what has no commit record. `clean_partial_writes` deletes temporary files,
   shards without a manifest part, and every file of a write prefix whose commit record
   does not exist. It runs when a run starts (nothing writes then) and when the last write
   task has finished (a dead attempt's files go, its retry's stay). Only prefixes of the
   run attempts recorded in the dataset's run.json are rolled back: files that other
   writers made or copied (relabel, DatasetWriter) are never touched.
4. Resume skips only what a commit record names. A pair absent from every commit record
   is recomputed; its earlier, uncommitted files were rolled back, so writing it again
   duplicates nothing. A pair named in one is never produced again. A transient failure
   writes its failures row but no progress row, so the next run retries the pair; a
   permanent one writes both (see schemas/reasons.py).

5. A write task commits once. Before writing, a try of write task `task_idx` asks the
   run's claims actor (`WriteClaims`, on the driver's node) which prefix holds the task.
   If an earlier try holds it and that try's commit record exists, this try writes
   nothing and returns that record's counts: Ray retries a task whose worker died after
   its commit record and before returning (a lost node, an OOM kill), and a storage
   error can hide a PUT that landed. Otherwise this try takes the claim and writes.

The commit record is a single object PUT (or a rename of a complete local file), so it
is atomic. Tested with one pair per block and per write, write workers SIGKILLed between
their shards and their commit record, and the caption actor SIGKILLed mid-batch
(tests/pipeline/test_faults.py); unit tests in tests/pipeline/test_sink_resume.py. Not covered: two runs writing the same output at once, and a worker that
keeps writing after Ray declared it dead (a network partition): its late commit record
could name pairs that the retry committed too (the claim is taken before writing, so the
retry has already started by then).
"""
from __future__ import annotations

import posixpath
import re
import uuid
from typing import Iterable

import pyarrow as pa

from datagen.io.compact import compacted_from
from datagen.io.negatives import NEGATIVES_DIR
from datagen.io.pair_store import PAIRS_DIR
from datagen.io.shards import FAILURES_DIR, MANIFEST_DIR, PROGRESS_DIR, SHARDS_DIR, write_parquet
from datagen.io.storage import Location
from datagen.io.tables import committed_shards
from schemas.tables import PROGRESS_SCHEMA

_COMMIT = "commit.parquet"
_PREFIX = r"[0-9a-z]+-\d{5,}-w[0-9a-f]{8}-"
# The files one write attempt makes, by directory: (glob, pattern of the name with the prefix as group 1)
_TASK_FILES = (
    (f"{SHARDS_DIR}/*/*.tar", re.compile(rf"({_PREFIX})\d{{6}}\.tar")),
    (f"{MANIFEST_DIR}/*.parquet", re.compile(rf"[a-z0-9_]+-({_PREFIX})\d{{6}}\.parquet")),
    (f"{FAILURES_DIR}/*.parquet", re.compile(rf"({_PREFIX})[0-9a-f]{{16}}\.parquet")),
    (f"{PAIRS_DIR}/*", re.compile(rf"({_PREFIX})\d{{6}}\.(?:tar|parquet)")),  # the pair store (io/pair_store.py)
    (f"{NEGATIVES_DIR}/*.parquet", re.compile(rf"({_PREFIX})[0-9a-f]{{12}}\.parquet")),  # the judge's rejects
)
_RECORD = re.compile(rf"({_PREFIX}){re.escape(_COMMIT)}")


def write_prefix(attempt: str, task_idx: int) -> str:
    """A fresh prefix for one write attempt (a retried task gets a new one)."""
    if not re.fullmatch(r"[0-9a-z]+", attempt):
        raise ValueError(f"run attempt id {attempt!r} must be lowercase letters and digits")
    return f"{attempt}-{task_idx:05d}-w{uuid.uuid4().hex[:8]}-"


class WriteClaims:
    """Which write prefix holds each write task of this run (point 5 above). A plain object:
    run it as an actor with `start_write_claims`, or call it directly (no Ray)."""

    def __init__(self):
        self.holders: dict[int, str] = {}

    def holder(self, task_idx: int) -> str | None:
        return self.holders.get(task_idx)

    def hold(self, task_idx: int, prefix: str) -> None:
        self.holders[task_idx] = prefix


class WriteClaimsClient:
    """What a write task holds: the actor's handle, with WriteClaims' two questions."""

    def __init__(self, handle):
        self.handle = handle

    def holder(self, task_idx: int) -> str | None:
        import ray

        return ray.get(self.handle.holder.remote(task_idx))

    def hold(self, task_idx: int, prefix: str) -> None:
        import ray

        ray.get(self.handle.hold.remote(task_idx, prefix))


def start_write_claims() -> WriteClaimsClient:
    from datagen.pipeline.progress import on_driver_node

    return WriteClaimsClient(on_driver_node(WriteClaims))


def committed_counts(loc: Location, prefix: str) -> dict[str, int] | None:
    """The counts a committed write returned, from its commit record; None if it has none."""
    import pyarrow.parquet as pq

    rel = commit_record_path(prefix)
    if not loc.exists(rel):
        return None
    rows = pq.read_table(pa.BufferReader(loc.read_bytes(rel)), columns=["status", "made"]).to_pylist()
    done = [r for r in rows if r["status"] == "done"]
    return {"pairs": len(done), "samples": sum(len(r["made"] or []) for r in done),
            "dropped": len(rows) - len(done), "already_committed": 1}


def commit_record_path(prefix: str) -> str:
    return f"{PROGRESS_DIR}/{prefix}{_COMMIT}"


def write_commit_record(loc: Location, prefix: str, progress_rows: list[dict]) -> None:
    """Commit every file written under `prefix`; written even with no rows (a task that
    met only transient failures must still commit its failures part)."""
    write_parquet(loc, commit_record_path(prefix), pa.Table.from_pylist(progress_rows, schema=PROGRESS_SCHEMA))


def committed_prefixes(loc: Location) -> set[str]:
    """Prefixes with a commit record: its own part, or merged into a compacted part."""
    names = [n for p in loc.glob(f"{PROGRESS_DIR}/*.parquet") for n in compacted_from(loc, p)]
    return {m.group(1) for n in names if (m := _RECORD.fullmatch(n))}


def clean_partial_writes(loc: Location, run_attempts: Iterable[str] = ()) -> list[str]:
    """Delete temporary files, shards that never got their manifest part, and every file of
    a write attempt of `run_attempts` that never wrote its commit record. Call it only
    when nothing writes."""
    removed = loc.glob("**/*.tmp-*")
    for rel in removed:
        loc.remove(rel)
    committed, attempts = committed_prefixes(loc), set(run_attempts)
    listed = {pattern: loc.glob(pattern) for pattern, _ in _TASK_FILES}
    uncommitted = {rel for pattern, name in _TASK_FILES for rel in listed[pattern]
                   if (m := name.fullmatch(posixpath.basename(rel))) and m.group(1) not in committed
                   and m.group(1).split("-")[0] in attempts}
    # manifest parts before their shards: a clean cut short leaves shards without parts,
    # which the next clean removes by the rule below
    for rel in sorted(uncommitted, key=lambda rel: not rel.startswith(MANIFEST_DIR)):
        loc.remove(rel)
    with_rows = committed_shards(loc)  # by their own manifest part, or in a compacted one
    orphans = []
    for rel in listed[f"{SHARDS_DIR}/*/*.tar"]:
        if rel not in uncommitted and rel not in with_rows:
            loc.remove(rel)
            orphans.append(rel)
    return removed + sorted(uncommitted) + orphans
