"""The negatives table: pairs the judge rejected, beside the failures table (DIR/negatives/*.parquet).

A rejected pair is a failure of the run (it yields no samples) and a labelled example for
whoever trains or calibrates a judge next: its frames, instruction and verdict are kept.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from datagen.io.shards import write_parquet
from datagen.io.storage import Location
from schemas import columns as C
from schemas.members import pair_key
from schemas.tables import NEGATIVES_SCHEMA

NEGATIVES_DIR = "negatives"
REJECTED = ("verify", "instruction_mismatch")


def negative_row(row: dict[str, Any]) -> dict[str, Any] | None:
    """The negatives-table row of a pipeline row the judge rejected; None for any other row."""
    if (row.get(C.FAILED_STAGE), row.get(C.FAILED_REASON)) != REJECTED or not row.get(C.VERIFY):
        return None
    verdict = json.loads(row[C.VERIFY])
    caption = json.loads(row.get(C.CAPTION) or "{}")
    return {
        "pair_key": pair_key(row[C.VIDEO_ID], row[C.SHOT], row[C.PAIR]), "video_uri": row.get(C.VIDEO_URI),
        "video_id": row[C.VIDEO_ID], "shot": row[C.SHOT], "pair": row[C.PAIR], "frame_a": row.get(C.FRAME_A),
        "frame_b": row.get(C.FRAME_B), "t_a_s": row.get(C.T_A_S), "t_b_s": row.get(C.T_B_S),
        "instruction": caption.get("instruction"), "caption_json": row.get(C.CAPTION), "score": verdict["score"],
        "verdict_json": row[C.VERIFY], "judge_json": row.get(C.provenance_column("verify")),
        "width": row.get(C.WIDTH), "height": row.get(C.HEIGHT),
        "image_a": row.get(C.IMAGE_A), "image_b": row.get(C.IMAGE_B),
    }


def write_negatives(loc: Location, rows: list[dict[str, Any]], prefix: str) -> None:
    if rows:
        write_parquet(loc, f"{NEGATIVES_DIR}/{prefix}{uuid.uuid4().hex[:12]}.parquet",
                      pa.Table.from_pylist(rows, schema=NEGATIVES_SCHEMA))


def read_negatives(loc: Location, columns: list[str] | None = None, pair_keys: list[str] | None = None) -> pa.Table:
    """The table, or only the rows of `pair_keys` (their frames are the bulk: read just those)."""
    files = [loc.path(p) for p in loc.glob(f"{NEGATIVES_DIR}/*.parquet")]
    if not files:
        return NEGATIVES_SCHEMA.empty_table().select(columns or NEGATIVES_SCHEMA.names)
    only = None if pair_keys is None else pc.field("pair_key").isin(pa.array(pair_keys, pa.string()))
    return pads.dataset(files, schema=NEGATIVES_SCHEMA, format="parquet", filesystem=loc.fs).to_table(
        columns=columns, filter=only)
