"""Resume state of a run: which pairs and videos are done, from the progress table.

The progress table is the union of the write attempts' commit records (commit.py holds
the protocol and why it is exactly-once): a pair listed there is committed, samples and
all; a pair listed nowhere is recomputed. Partial writes are rolled back before this is read.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as pads

from datagen.io.shards import MANIFEST_DIR
from datagen.io.storage import Location
from datagen.io.tables import count_manifest_rows
from datagen.pipeline.commit import PROGRESS_DIR
from schemas.tables import PROGRESS_SCHEMA


def read_progress(loc: Location) -> pa.Table:
    files = [loc.path(p) for p in loc.glob(f"{PROGRESS_DIR}/*.parquet")]
    if not files:
        return PROGRESS_SCHEMA.empty_table()
    return pads.dataset(files, schema=PROGRESS_SCHEMA, format="parquet", filesystem=loc.fs).to_table()


@dataclass
class ResumeState:
    done_pairs: set[str] = field(default_factory=set)
    done_videos: set[str] = field(default_factory=set)  # every pair of the video done, or the video failed
    failed_uris: set[str] = field(default_factory=set)  # videos that failed as a whole
    samples_committed: int = 0

    @classmethod
    def load(cls, loc: Location, retry_failed: frozenset[str] = frozenset()) -> "ResumeState":
        """`retry_failed`: permanent failure reasons to re-open (their pairs and videos are not done)."""
        if not loc.exists(MANIFEST_DIR) and not loc.exists(PROGRESS_DIR):
            return cls()
        progress = [r for r in read_progress(loc).to_pylist()
                    if not (r["status"] == "failed" and r["reason"] in retry_failed)]
        done_pairs = {r["pair_key"] for r in progress if r["pair_key"]}
        per_video: dict[str, set[str]] = defaultdict(set)
        expected: dict[str, int] = {}
        done_videos, failed_uris = set(), set()
        for r in progress:
            if r["pair_key"] is None:  # failed at video level: by URI, since a duplicate
                failed_uris.add(r["video_uri"])  # copy fails while its twin's id is still in work
                continue
            per_video[r["video_id"]].add(r["pair_key"])
            if r["pairs_in_video"] is not None:
                expected[r["video_id"]] = r["pairs_in_video"]
        done_videos |= {v for v, n in expected.items() if len(per_video[v]) >= n}
        return cls(done_pairs, done_videos, failed_uris, count_manifest_rows(loc))

    def is_video_done(self, video_id: str | None, video_uri: str) -> bool:
        return video_uri in self.failed_uris or (video_id is not None and video_id in self.done_videos)
