"""The last operator: assembled rows -> shards, manifest, failures and progress parts."""
from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any, Iterable

from ray.data import Datasink
from ray.data.block import BlockAccessor

import pyarrow.parquet as pq

from datagen.io.negatives import negative_row, write_negatives
from datagen.io.shards import MANIFEST_DIR, DatasetWriter, ShardLimits
from datagen.io.storage import Location
from datagen.pipeline.progress import write_progress
from schemas import columns as C
from schemas.members import pair_key
from schemas.sample import Sample, SampleRecord


def _pair_key_of(row: dict[str, Any]) -> str | None:
    if row.get("pair_key"):
        return row["pair_key"]
    if row.get(C.SHOT) is not None and row.get(C.PAIR) is not None and row.get(C.VIDEO_ID):
        return pair_key(row[C.VIDEO_ID], row[C.SHOT], row[C.PAIR])
    return None


def write_rows(loc: Location, rows: Iterable[dict[str, Any]], *, prefix: str, limits: ShardLimits,
               skip_keys: frozenset[str] = frozenset(), dataset_version: int = 1) -> dict[str, Any]:
    """Write one bundle of rows; returns counts. Usable without Ray (tests, relabel)."""
    progress: list[dict] = []
    negatives: list[dict] = []  # pairs the judge rejected, kept with their frames and verdict
    counts: Counter = Counter()
    with DatasetWriter(loc, limits=limits, prefix=prefix, dataset_version=dataset_version) as w:
        for row in rows:
            kind = row.get("row_kind")
            if row.get(C.FAILED_STAGE) is not None:
                pk = _pair_key_of(row)
                w.add_failure(input_uri=row.get(C.VIDEO_URI), video_id=row.get(C.VIDEO_ID),
                              key=row.get("key") or pk, stage=row[C.FAILED_STAGE],
                              reason=row.get(C.FAILED_REASON) or "unknown", detail=row.get(C.FAILED_DETAIL))
                counts["failures"] += 1
                negative = negative_row(row)
                if negative is not None:
                    negatives.append(negative)
                if kind != "failure":  # a whole pair (or video) failed before assemble
                    progress.append({"pair_key": pk, "video_id": row.get(C.VIDEO_ID),
                                     "video_uri": row.get(C.VIDEO_URI), "pairs_in_video": row.get("pairs_in_video"),
                                     "status": "failed", "made": [], "skipped_json": None})
            elif kind == "sample":
                if row["key"] in skip_keys:
                    counts["skipped_committed"] += 1
                    continue
                record = SampleRecord.from_json(row["record_json"])
                w.add(Sample(record, dict(zip(row["member_names"], row["member_data"]))))
                counts["samples"] += 1
            elif kind == "pair":
                progress.append({"pair_key": row["pair_key"], "video_id": row[C.VIDEO_ID],
                                 "video_uri": row[C.VIDEO_URI], "pairs_in_video": row.get("pairs_in_video"),
                                 "status": "done", "made": json.loads(row.get("made_json") or "[]"),
                                 "skipped_json": row.get("skipped_json")})
                counts["pairs"] += 1
            else:
                raise ValueError(f"row of unknown kind {kind!r} reached the writer (columns: {sorted(row)})")
    write_negatives(loc, negatives, prefix)
    write_progress(loc, progress, prefix)  # last: marks these pairs done
    return dict(counts)


def committed_by_prefix(loc: Location, prefix: str) -> frozenset[str]:
    """Keys an earlier attempt of this very write task committed. Ray re-runs a write task
    from the start when its node dies; its task index, hence its prefix, stays the same."""
    parts = loc.glob(f"{MANIFEST_DIR}/*-{prefix}*.parquet")
    if not parts:
        return frozenset()
    return frozenset(k for p in parts for k in pq.read_table(loc.open(p), columns=["key"]).column("key").to_pylist())


class DatasetSink(Datasink):
    """Ray Data sink: each write task writes its own shards under a unique prefix."""

    def __init__(self, url: str, limits: ShardLimits, skip_keys: frozenset[str], min_rows_per_write: int,
                 attempt: str | None = None):
        self.url, self.limits, self.skip_keys = url, limits, skip_keys
        self._min_rows = min_rows_per_write
        self.attempt = attempt or uuid.uuid4().hex[:6]  # distinct per run attempt: no name clash after a resume
        self.totals: Counter = Counter()

    @property
    def min_rows_per_write(self) -> int:
        return self._min_rows

    def write(self, blocks, ctx) -> dict[str, Any]:
        loc = Location.parse(self.url)
        prefix = f"{self.attempt}-{ctx.task_idx:05d}-"
        rows = (r for b in blocks for r in BlockAccessor.for_block(b).to_arrow().to_pylist())
        return write_rows(loc, rows, prefix=prefix, limits=self.limits,
                          skip_keys=self.skip_keys | committed_by_prefix(loc, prefix))

    def on_write_complete(self, write_result) -> None:
        for r in write_result.write_returns:
            self.totals.update(r)
