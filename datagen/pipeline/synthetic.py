"""Dataset directories of committed tables (manifest and progress parts, no shards) of any
size, written with the project's own table writers: for resume tests and bench/scale.py.

The layout is what a run leaves: one manifest part and one progress part per write task
of `rows_per_part` samples. Optionally the last `pending_videos` videos have manifest rows
but no progress rows (pairs a resume must redo).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datagen.io.shards import MANIFEST_DIR, PROGRESS_DIR, write_parquet
from datagen.io.storage import Location
from schemas.tables import MANIFEST_SCHEMA, PROGRESS_SCHEMA
from schemas.tasks import TASK_BY_ID

TASK_IDS = (0, 1, 4, 5, 6)  # five task samples per pair: a typical mix


def video_uri(v: int) -> str:
    return f"s3://corpus/videos/{v:08d}.mp4"


def video_id(v: int) -> str:
    return f"vid{v:08d}"


def write_committed(loc: Location, samples: int, *, pairs_per_video: int = 4, rows_per_part: int = 2000,
                    pending_videos: int = 0) -> dict[str, int]:
    """Write `samples` committed samples; returns the counts a ResumeState must find."""
    per_video = pairs_per_video * len(TASK_IDS)
    videos = -(-samples // per_video)
    i = np.arange(samples)
    v, p, t = i // per_video, (i // len(TASK_IDS)) % pairs_per_video, np.array(TASK_IDS)[i % len(TASK_IDS)]
    vid = pc.binary_join_element_wise("vid", pa.array(np.char.zfill(v.astype(str), 8)), "")
    pair = pc.binary_join_element_wise(vid, pa.array(np.char.zfill(p.astype(str), 4)), "_s0000_p")
    key = pc.binary_join_element_wise(pair, pa.array(np.char.zfill(t.astype(str), 2)), "_t")
    uri = pc.binary_join_element_wise("s3://corpus/videos/", pa.array(np.char.zfill(v.astype(str), 8)), ".mp4", "")
    names = np.array([TASK_BY_ID[int(x)].name for x in TASK_IDS])[i % len(TASK_IDS)]
    members = pa.array([[{"name": "m.json", "size_bytes": 100}]] * samples, MANIFEST_SCHEMA.field("members").type)
    empty_labels = pa.array([[]] * samples, MANIFEST_SCHEMA.field("labels").type)
    manifest = pa.table({
        "key": key, "task_id": pa.array(t, pa.int16()), "task": pa.array(names),
        "shard": pc.binary_join_element_wise("shards/", pa.array(names), "/000000.tar", ""),
        "members": members, "sample_bytes": pa.array(np.full(samples, 100), pa.int64()),
        "video_uri": uri, "video_id": vid, "shot": pa.array(np.zeros(samples, np.int32)),
        "pair": pa.array(p.astype(np.int32)), "frame_a": pa.array(p * 10), "frame_b": pa.array(p * 10 + 5),
        "t_a_s": pa.array(p * 1.0), "t_b_s": pa.array(p * 1.0 + 0.5), "labels": empty_labels,
        "changed_labels": pa.array([[]] * samples, pa.list_(pa.string())), "previous_labels": empty_labels,
        "dataset_version": pa.array(np.ones(samples, np.int32)),
        "verify_score": pa.nulls(samples, pa.int16()),
    }, schema=MANIFEST_SCHEMA)
    first_sample = (i % len(TASK_IDS)) == 0
    done = first_sample & (v < videos - pending_videos)
    n_done = int(done.sum())
    columns = {"pair_key": pc.filter(pair, done), "video_id": pc.filter(vid, done), "video_uri": pc.filter(uri, done),
               "pairs_in_video": pa.array(np.full(n_done, pairs_per_video, np.int32)),
               "status": pa.array(["done"] * n_done), "made": pa.array([[]] * n_done, pa.list_(pa.string()))}
    # every other column (the failure reason, skipped tasks) is null for a done pair
    progress = pa.Table.from_arrays([columns.get(f.name, pa.nulls(n_done, f.type)) for f in PROGRESS_SCHEMA],
                                    schema=PROGRESS_SCHEMA)
    pairs_per_part = rows_per_part // len(TASK_IDS)
    for n, at in enumerate(range(0, samples, rows_per_part)):
        write_parquet(loc, f"{MANIFEST_DIR}/synthetic-{n:06d}.parquet", manifest.slice(at, rows_per_part))
    for n, at in enumerate(range(0, progress.num_rows, pairs_per_part)):
        write_parquet(loc, f"{PROGRESS_DIR}/synthetic-{n:06d}.parquet", progress.slice(at, pairs_per_part))
    return {"samples": samples, "videos": videos, "pairs_done": progress.num_rows,
            "videos_done": videos - pending_videos}
