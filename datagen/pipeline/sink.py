"""The last operator: one row per pair -> shards, manifest, failures and the commit record.

Each write attempt writes under its own prefix and commits by writing its progress part
last; datagen/pipeline/commit.py says why that is exactly-once. Per row:
- an assembled pair: its samples go to shards, the samples it could not build to the
  failures table, and the pair to the commit record as "done";
- a failed pair or video, permanent reason: a failures row and a "failed" progress row
  (done: not retried unless `--retry-failed REASON`);
- a failed pair or video, transient reason: a failures row only, so the next run of the
  same command retries it.
A storage error retries the whole attempt under a fresh prefix, with backoff; the failed
attempt's files have no commit record and are rolled back. A full disk stops at once.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any, Iterable

from ray.data import Datasink
from ray.data.block import BlockAccessor

from datagen.io.faults import StorageFailed, is_disk_full, is_storage_error
from datagen.io.negatives import negative_row, write_negatives
from datagen.io.shards import DatasetWriter, ShardLimits
from datagen.io.storage import Location
from datagen.io.pair_store import PairStoreWriter
from datagen.pipeline.commit import clean_partial_writes, committed_counts, write_commit_record, write_prefix
from datagen.pipeline.pair_record import kept_label_failures, label_changes, pair_record
from schemas import columns as C
from schemas.members import pair_key
from schemas.reasons import PERMANENT, kind_of
from schemas.sample import Sample, SampleRecord


def _pair_key_of(row: dict[str, Any]) -> str | None:
    if row.get(C.PAIR_KEY):
        return row[C.PAIR_KEY]
    if row.get(C.SHOT) is not None and row.get(C.PAIR) is not None and row.get(C.VIDEO_ID):
        return pair_key(row[C.VIDEO_ID], row[C.SHOT], row[C.PAIR])
    return None


def _progress_row(row: dict[str, Any], pk: str | None, status: str, reason: str | None = None) -> dict[str, Any]:
    return {"pair_key": pk, "video_id": row.get(C.VIDEO_ID), "video_uri": row.get(C.VIDEO_URI),
            "pairs_in_video": row.get(C.PAIRS_IN_VIDEO), "status": status, "reason": reason,
            "made": json.loads(row.get(C.MADE) or "[]"), "skipped_json": row.get(C.SKIPPED)}


def write_rows(loc: Location, rows: Iterable[dict[str, Any]], *, prefix: str, limits: ShardLimits,
               dataset_version: int = 1) -> dict[str, int]:
    """Write one attempt's rows under `prefix` and commit them; returns counts. Usable without Ray."""
    progress: list[dict] = []
    negatives: list[dict] = []  # pairs the judge rejected, kept with their frames and verdict
    counts: Counter = Counter()
    with DatasetWriter(loc, limits=limits, prefix=prefix, dataset_version=dataset_version) as w, \
            PairStoreWriter(loc, prefix, dataset_version=dataset_version) as pairs:
        for row in rows:
            pk = _pair_key_of(row)
            if C.is_failure_mark(row.get(C.FAILED_STAGE)):
                reason = row.get(C.FAILED_REASON)
                permanent = kind_of(reason) == PERMANENT  # an undeclared reason is a bug: fail loudly
                w.add_failure(input_uri=row.get(C.VIDEO_URI), video_id=row.get(C.VIDEO_ID), key=row.get("key") or pk,
                              stage=row[C.FAILED_STAGE], reason=reason, detail=row.get(C.FAILED_DETAIL))
                counts["failures"] += 1
                negative = negative_row(row)
                if negative is not None:
                    negatives.append(negative)
                if permanent:
                    progress.append(_progress_row(row, pk, "failed", reason))
                    counts["dropped"] += 1
                else:
                    counts["pending_retry"] += 1
                continue
            if row.get(C.SAMPLE_KEYS) is None:
                raise ValueError(f"row that is neither an assembled pair nor a failure reached the writer "
                                 f"(columns: {sorted(row)})")
            for rec, names, data in zip(row[C.SAMPLE_RECORDS], row[C.SAMPLE_MEMBER_NAMES], row[C.SAMPLE_MEMBER_DATA],
                                        strict=True):
                sample = Sample(SampleRecord.from_json(rec), dict(zip(names, data, strict=True)))
                w.add(sample, *label_changes(row, sample.record.task))
                counts["samples"] += 1
            pairs.add(*pair_record(row))  # what a re-label needs, committed with the samples
            for f in kept_label_failures(row):
                w.add_failure(**f)
                counts["failures"] += 1
            for f in json.loads(row.get(C.SAMPLE_FAILURES) or "[]"):
                kind_of(f["reason"])
                w.add_failure(input_uri=row.get(C.VIDEO_URI), video_id=row.get(C.VIDEO_ID), key=f["key"],
                              stage="assemble", reason=f["reason"], detail=f["detail"])
                counts["failures"] += 1
            progress.append(_progress_row(row, pk, "done"))
            counts["pairs"] += 1
    write_negatives(loc, negatives, prefix)
    write_commit_record(loc, prefix, progress)  # last: commits every file written under prefix
    return dict(counts)


class DatasetSink(Datasink):
    """Ray Data sink: each write attempt writes its own files under a fresh prefix."""

    def __init__(self, url: str, limits: ShardLimits, min_rows_per_write: int, attempt: str,
                 storage_retries: int = 4, storage_backoff_s: float = 2.0, dataset_version: int = 1,
                 claims=None):
        self.url, self.limits = url, limits
        self.claims = claims  # commit.WriteClaims(Client): None only where nothing retries a task (unit tests)
        self._min_rows = min_rows_per_write
        self.attempt = attempt  # the run attempt (recorded in run.json); each write adds its own token
        self.storage_retries, self.storage_backoff_s = storage_retries, storage_backoff_s
        self.dataset_version = dataset_version  # a re-label writes the next version
        self.totals: Counter = Counter()

    @property
    def min_rows_per_write(self) -> int:
        return self._min_rows

    def write(self, blocks, ctx) -> dict[str, Any]:
        loc = Location.parse(self.url)
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]  # held: a retry writes them again
        attempt, prefix = 0, self.claims.holder(ctx.task_idx) if self.claims else None
        while True:
            try:
                done = committed_counts(loc, prefix) if prefix else None
                if done is not None:  # an earlier try of this task committed (see commit.py, point 5)
                    return done
                prefix = write_prefix(self.attempt, ctx.task_idx)
                if self.claims:
                    self.claims.hold(ctx.task_idx, prefix)
                return write_rows(loc, self.rows_of(tables), prefix=prefix, limits=self.limits,
                                  dataset_version=self.dataset_version)
            except Exception as e:
                if is_disk_full(e):
                    raise StorageFailed(f"output {self.url} is full ({e}); nothing of this write was committed: "
                                        f"free space, then run the same command again to resume") from None
                if not is_storage_error(e):
                    raise
                if attempt == self.storage_retries:
                    raise StorageFailed(f"output {self.url} failed {1 + attempt} times ({type(e).__name__}: {e}); "
                                        f"nothing of this write was committed: run the same command again "
                                        f"when the storage is back, to resume") from None
            time.sleep(self.storage_backoff_s * 2 ** attempt)
            attempt += 1

    def rows_of(self, tables: list) -> Iterable[dict[str, Any]]:
        """The rows of one write task, one pair each (a seam for fault tests)."""
        return (r for t in tables for r in t.to_pylist())

    def on_write_complete(self, write_result) -> None:
        for r in write_result.write_returns:
            self.totals.update(r)
        # every write task has finished: files of attempts that died (Ray retried them
        # under a new prefix) have no commit record and go now
        clean_partial_writes(Location.parse(self.url), [self.attempt])
