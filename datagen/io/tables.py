"""Read the manifest and failures Parquet datasets, and write stats.json."""
from __future__ import annotations

import json
import posixpath
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from datagen.io.compact import COMPACTED_PREFIX, parquet_parts
from datagen.io.shards import FAILURES_DIR, MANIFEST_DIR, shard_path
from datagen.io.storage import Location
from schemas.tables import FAILURES_SCHEMA, MANIFEST_SCHEMA
from schemas.tasks import TASKS

STATS_FILE = "stats.json"


def read_table(loc: Location, rel: str, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """All rows of a table folder (only `columns`, when given: Parquet reads just those)."""
    files = [loc.path(p) for p in parquet_parts(loc, rel)]
    if not files:
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    return pads.dataset(files, schema=schema, format="parquet", filesystem=loc.fs).to_table(columns=columns)


def read_manifest(loc: Location) -> pa.Table:
    return read_table(loc, MANIFEST_DIR, MANIFEST_SCHEMA)


def count_manifest_rows(loc: Location) -> int:
    """Committed samples, from the parts' footers (no rows read)."""
    files = [loc.path(p) for p in parquet_parts(loc, MANIFEST_DIR)]
    return pads.dataset(files, format="parquet", filesystem=loc.fs).count_rows() if files else 0


def read_failures(loc: Location) -> pa.Table:
    return read_table(loc, FAILURES_DIR, FAILURES_SCHEMA)


def committed_shards(loc: Location) -> set[str]:
    """Shards that have manifest rows: named by their own part, or listed in a compacted part."""
    parts = parquet_parts(loc, MANIFEST_DIR)
    own = [posixpath.basename(p)[: -len(".parquet")] for p in parts]
    shards = {shard_path(*name.split("-", 1)) for name in own if not name.startswith(COMPACTED_PREFIX)}
    merged = [loc.path(p) for p, name in zip(parts, own) if name.startswith(COMPACTED_PREFIX)]
    if merged:
        column = pads.dataset(merged, schema=MANIFEST_SCHEMA, format="parquet", filesystem=loc.fs).to_table(
            columns=["shard"])["shard"]
        shards.update(pc.unique(column).to_pylist())
    return shards


def compute_stats(loc: Location, stage_counts: dict[str, dict[str, Any]] | None = None,
                  extra: dict[str, Any] | None = None, failures: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Counts per task (from the manifest) and per stage (in, out, dropped by reason). `failures`:
    the rows that count (outcome.standing_failures); by default the whole failures table."""
    manifest = read_manifest(loc).select(["task", "sample_bytes", "video_id"]).to_pydict()
    rows = read_failures(loc).select(["stage", "reason"]).to_pylist() if failures is None else failures
    per_task = Counter(manifest["task"])
    # in/out come from the pipeline's counters; drops always from the failures table,
    # the one record that survives resumes.
    stages: dict[str, dict[str, Any]] = {k: {**v, "dropped": {}} for k, v in (stage_counts or {}).items()}
    for f in rows:
        dropped = stages.setdefault(f["stage"], {"dropped": {}})["dropped"]
        dropped[f["reason"]] = dropped.get(f["reason"], 0) + 1
    for st in stages.values():  # the share of its input a stage (or filter) lets through
        if st.get("in") and "out" in st:
            st["survival"] = round(st["out"] / st["in"], 4)
    return {
        "samples": len(manifest["task"]),
        "bytes": int(sum(manifest["sample_bytes"])),
        "videos_with_samples": len(set(manifest["video_id"])),
        "tasks": {t.name: per_task.get(t.name, 0) for t in TASKS if per_task.get(t.name)},
        "failures": len(rows),
        "stages": stages,
        **(extra or {}),
    }


def write_stats(loc: Location, stats: dict[str, Any]) -> None:
    # insertion order kept: stages are listed in pipeline order
    loc.write_bytes(STATS_FILE, (json.dumps(stats, indent=2) + "\n").encode())


def read_stats(loc: Location) -> dict[str, Any] | None:
    if not loc.exists(STATS_FILE):
        return None
    return json.loads(loc.read_bytes(STATS_FILE))
