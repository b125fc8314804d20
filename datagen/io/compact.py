"""Compaction: merge the many small Parquet parts of a table folder into few large ones.

Every write task writes its own manifest, failures and progress parts, so a run over a
million videos leaves millions of small files. Compaction merges the small parts of a
folder in groups of up to `target_bytes`, atomically and resumably:

1. write a journal `{folder}/_compaction.json` naming the merged part and its inputs;
2. write the merged part `compacted-{hash of the inputs}.parquet` (atomic: complete or absent);
3. delete the inputs, then the journal.

The merged part's footer names every original part it holds (`compacted_from`): the
commit protocol (pipeline/commit.py) knows a write attempt is committed by the name of
its commit record, and that must survive the merge.

Readers list parts through `parquet_parts`: while a journal's merged part exists, its
inputs are hidden, so every state between the steps shows each row exactly once. A kill at
any step is finished by the next compaction (or the next run, which compacts first): a
journal whose merged part exists has its remaining inputs deleted, one without is dropped.
The journal starts with "_" so that pyarrow's and Ray's directory readers skip it.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from datagen.io.shards import FAILURES_DIR, MANIFEST_DIR, PROGRESS_DIR, write_parquet
from datagen.io.storage import Location
from schemas.tables import FAILURES_SCHEMA, MANIFEST_SCHEMA, PROGRESS_SCHEMA

JOURNAL = "_compaction.json"
COMPACTED_PREFIX = "compacted-"
COMPACTED_FROM_KEY = b"datagen.compacted_from"  # footer metadata: JSON list of the merged parts' names
TABLES = {MANIFEST_DIR: MANIFEST_SCHEMA, FAILURES_DIR: FAILURES_SCHEMA, PROGRESS_DIR: PROGRESS_SCHEMA}
TARGET_BYTES = 128 * 1024 * 1024  # a part this size reads at full disk/object-store speed; few per million rows


@dataclass
class CompactionResult:
    folder: str
    parts_before: int
    parts_after: int
    rows: int


def _journal(loc: Location, folder: str) -> dict | None:
    rel = f"{folder}/{JOURNAL}"
    return json.loads(loc.read_bytes(rel)) if loc.exists(rel) else None


def parquet_parts(loc: Location, folder: str) -> list[str]:
    """The parts readers must read (relative paths, sorted): inputs of a merge in flight are hidden."""
    parts = loc.glob(f"{folder}/*.parquet")
    journal = _journal(loc, folder) if parts else None
    if journal and journal["output"] in parts:
        hidden = set(journal["inputs"])
        parts = [p for p in parts if p not in hidden]
    return parts


def finish_pending(loc: Location, folder: str) -> None:
    """Complete (merged part written) or drop (not written) a compaction that was killed."""
    journal = _journal(loc, folder)
    if journal is None:
        return
    if loc.exists(journal["output"]):
        for rel in journal["inputs"]:
            loc.remove(rel)
    loc.remove(f"{folder}/{JOURNAL}")


def _read_part(loc: Location, rel: str, schema: pa.Schema) -> pa.Table:
    # through a dataset with the schema: parts written before a column was added read as nulls
    return pads.dataset([loc.path(rel)], schema=schema, format="parquet", filesystem=loc.fs).to_table()


def compacted_from(loc: Location, rel: str) -> list[str]:
    """The names of the original parts a part holds: its own, or, for a compacted part, those
    recorded in its footer (commit.py still needs the names of merged commit records)."""
    name = posixpath.basename(rel)
    if not name.startswith(COMPACTED_PREFIX):
        return [name]
    with loc.open(rel) as f:
        meta = pq.ParquetFile(f).schema_arrow.metadata or {}
    return json.loads(meta.get(COMPACTED_FROM_KEY, b"[]"))


def _sizes(loc: Location, folder: str) -> dict[str, int]:
    """Sizes of the folder's parts from one listing (no request per file)."""
    base = loc.root.rstrip("/") + "/"
    loc.fs.invalidate_cache()  # object-store listings are cached per process; workers wrote here
    try:
        entries = loc.fs.ls(loc.path(folder), detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for e in entries:
        name = e["name"][len(base):] if e["name"].startswith(base) else e["name"]
        if name.endswith(".parquet") and e.get("type", "file") == "file":
            out[name] = int(e.get("size") or 0)
    return out


def compact_folder(loc: Location, folder: str, schema: pa.Schema, target_bytes: int = TARGET_BYTES) -> CompactionResult:
    finish_pending(loc, folder)
    sizes = _sizes(loc, folder)
    small = sorted(p for p, n in sizes.items() if n < target_bytes // 2)
    groups: list[list[str]] = []
    total = target_bytes
    for rel in small:  # consecutive small parts, each group up to target_bytes
        if total + sizes[rel] > target_bytes:
            groups.append([])
            total = 0
        groups[-1].append(rel)
        total += sizes[rel]
    rows = 0
    merged = 0
    for inputs in groups:
        if len(inputs) < 2:
            continue
        digest = hashlib.sha1("\n".join(inputs).encode()).hexdigest()[:16]
        output = posixpath.join(folder, f"{COMPACTED_PREFIX}{digest}.parquet")
        loc.write_bytes(f"{folder}/{JOURNAL}", json.dumps({"output": output, "inputs": inputs}).encode())
        table = pa.concat_tables(_read_part(loc, p, schema) for p in inputs)
        names = [n for p in inputs for n in compacted_from(loc, p)]
        write_parquet(loc, output, table.replace_schema_metadata({COMPACTED_FROM_KEY: json.dumps(names)}))
        for rel in inputs:
            loc.remove(rel)
        loc.remove(f"{folder}/{JOURNAL}")
        rows += table.num_rows
        merged += len(inputs) - 1
    return CompactionResult(folder, len(sizes), len(sizes) - merged, rows)


def compact_dataset(loc: Location, target_bytes: int = TARGET_BYTES) -> list[CompactionResult]:
    """Compact the manifest, failures and progress folders of a dataset (`datagen compact DIR`)."""
    return [compact_folder(loc, folder, schema, target_bytes) for folder, schema in TABLES.items()]
