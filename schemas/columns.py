"""The batch contract between pipeline stages: column names and the failure convention.

A stage is a callable `batch -> batch` over a dict of equal-length columns (lists or
numpy arrays), as Ray Data's `map_batches` passes them. Rows never vanish inside a
stage: a row a stage cannot handle is *marked* failed (the three `failed_*` columns
set) and every later stage passes marked rows through untouched. The writer routes
marked rows to the failures table. Stages may add rows (one video -> many pairs).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

# Failure marking: all three are None on a healthy row.
FAILED_STAGE = "failed_stage"
FAILED_REASON = "failed_reason"
FAILED_DETAIL = "failed_detail"
FAILURE_COLUMNS = (FAILED_STAGE, FAILED_REASON, FAILED_DETAIL)

# --- video level (ingest/probe) ---
VIDEO_URI = "video_uri"  # str
VIDEO_ID = "video_id"  # str, content hash
# --- pair level (pairs stage output) ---
SHOT = "shot"  # int, shot index in the video
PAIR = "pair"  # int, pair index in the shot
FRAME_A, FRAME_B = "frame_a", "frame_b"  # int, frame indices
T_A_S, T_B_S = "t_a_s", "t_b_s"  # float seconds
IMAGE_A, IMAGE_B = "image_a", "image_b"  # bytes, encoded once (JPEG or PNG)
WIDTH, HEIGHT = "width", "height"  # int, size of image_a/image_b after resize
FACTS = "facts_json"  # str, JSON object of measured facts (gap_s, flow, camera_motion, ...)
# --- caption stage ---
CAPTION = "caption_json"  # str, JSON: caption_a, caption_b, instruction, edit_type, objects[{name, box}]
# --- verify stage ---
VERIFY = "verify_json"  # str, JSON: score (1-5), plausible (bool), failing_parts[] of the judge's verdict
# --- segment stage ---
SEGMENTS = "segments_json"  # str, JSON list: {object_id, name, box_a, box_b, area_a, area_b, score, visible_b}
MASKS_A, MASKS_B = "masks_a", "masks_b"  # list[bytes], 8-bit PNG per object (0/255), frame size
# --- depth stage ---
DEPTH_A, DEPTH_B = "depth_a", "depth_b"  # bytes, 16-bit PNG, frame size
# --- edges stage ---
EDGES_A, EDGES_B = "edges_a", "edges_b"  # bytes, 8-bit PNG (0/255), frame size
# --- assemble: ONE row per pair carries all of its task samples (never split across write tasks) ---
PAIR_KEY = "pair_key"  # str, schemas.members.pair_key
PAIRS_IN_VIDEO = "pairs_in_video"  # int, how many pairs the video yielded (resume's "video done" test)
SAMPLE_KEYS = "sample_keys"  # list[str]
SAMPLE_RECORDS = "sample_records"  # list[str], SampleRecord JSON per sample
SAMPLE_MEMBER_NAMES = "sample_member_names"  # list[list[str]] member names ("in0.jpg", ...) per sample
SAMPLE_MEMBER_DATA = "sample_member_data"  # list[list[bytes]] their bytes, same order
MADE = "made_json"  # str, JSON list of the task names sampled from the pair
SKIPPED = "skipped_json"  # str, JSON {task: why it does not apply}
SAMPLE_FAILURES = "sample_failures_json"  # str, JSON list of {key, reason, detail}: samples that failed to build
# --- provenance: one column per labelling stage, JSON of schemas.sample.Provenance ---
PROVENANCE = "provenance_{stage}"  # e.g. provenance_depth


def provenance_column(stage: str) -> str:
    return PROVENANCE.format(stage=stage)


def num_rows(batch: Mapping[str, Any]) -> int:
    if hasattr(batch, "num_rows"):  # pyarrow.Table
        return batch.num_rows
    return len(next(iter(batch.values()))) if batch else 0


def is_failure_mark(value: Any) -> bool:
    """A failed_stage value marks a failure only when it is a stage name: Ray Data hands an
    all-None column back as float NaN, which must read as healthy."""
    return isinstance(value, str)


def is_failed(batch: Mapping[str, Any], i: int) -> bool:
    col = batch.get(FAILED_STAGE)
    return col is not None and is_failure_mark(col[i])


def ensure_failure_columns(batch: dict[str, Any]) -> dict[str, Any]:
    n = num_rows(batch)
    for c in FAILURE_COLUMNS:
        if c not in batch:
            batch[c] = [None] * n
        else:
            batch[c] = list(batch[c])
    return batch


def mark_failed(batch: dict[str, Any], i: int, stage: str, reason: str, detail: str) -> None:
    """Mark row i failed (first failure wins; later stages skip the row)."""
    ensure_failure_columns(batch)
    if batch[FAILED_STAGE][i] is None:
        batch[FAILED_STAGE][i] = stage
        batch[FAILED_REASON][i] = reason
        batch[FAILED_DETAIL][i] = str(detail)[:2000]


def healthy_rows(batch: Mapping[str, Any]) -> list[int]:
    return [i for i in range(num_rows(batch)) if not is_failed(batch, i)]


def rows_to_batch(rows: Iterable[Mapping[str, Any]], columns: Iterable[str] | None = None) -> dict[str, list]:
    rows = list(rows)
    cols = list(columns) if columns is not None else list(dict.fromkeys(c for r in rows for c in r))
    return {c: [r.get(c) for r in rows] for c in cols}


def batch_to_rows(batch: Any) -> list[dict[str, Any]]:
    """Rows of plain Python values from a dict of columns or a pyarrow.Table.

    The pipeline asks Ray Data for `batch_format="pyarrow"`: its numpy format turns an
    all-None column into NaN floats, which would read as "failed" here.
    """
    if hasattr(batch, "to_pylist"):
        return batch.to_pylist()
    cols = list(batch)
    rows = [{c: _plain(batch[c][i]) for c in cols} for i in range(num_rows(batch))]
    for r in rows:  # failure columns hold str or None; Ray Data hands all-None ones back as NaN
        for c in FAILURE_COLUMNS:
            if c in r and not isinstance(r[c], str):
                r[c] = None
    return rows


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist") and not isinstance(v, (bytes, str)):
        return v.tolist()  # numpy scalars and arrays -> Python values
    return v
