"""Resume state of a run: what is committed, what is done, and cleaning up after a kill.

Commit order inside one write task: shards (each renamed when complete, then its manifest
part), failures part, and last the progress part naming the pairs it finished. A kill at
any point leaves either temporary files (deleted here), shards without manifest parts
(deleted here: never visible to readers as committed), or committed samples whose pair
is not yet marked done; those pairs are recomputed and their already-committed keys are
skipped by the writer, so nothing is duplicated or lost.
"""
from __future__ import annotations

import posixpath
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.dataset as pads

from datagen.io.shards import MANIFEST_DIR, SHARDS_DIR, manifest_part_path, write_parquet
from datagen.io.storage import Location
from datagen.io.tables import read_manifest
from schemas.members import pair_of
from schemas.tables import PROGRESS_SCHEMA

PROGRESS_DIR = "progress"


def read_progress(loc: Location) -> pa.Table:
    files = [loc.path(p) for p in loc.glob(f"{PROGRESS_DIR}/*.parquet")]
    if not files:
        return PROGRESS_SCHEMA.empty_table()
    return pads.dataset(files, schema=PROGRESS_SCHEMA, format="parquet", filesystem=loc.fs).to_table()


def write_progress(loc: Location, rows: list[dict], prefix: str) -> None:
    if rows:
        write_parquet(loc, f"{PROGRESS_DIR}/{prefix}{uuid.uuid4().hex[:12]}.parquet",
                      pa.Table.from_pylist(rows, schema=PROGRESS_SCHEMA))


def clean_partial_writes(loc: Location) -> list[str]:
    """Delete temporary files and shards that never got their manifest part."""
    removed = []
    for rel in loc.glob("**/*.tmp-*"):
        loc.remove(rel)
        removed.append(rel)
    for rel in loc.glob(f"{SHARDS_DIR}/*/*.tar"):
        task_name, name = rel.split("/")[-2], posixpath.basename(rel)[: -len(".tar")]
        if not loc.exists(manifest_part_path(task_name, name)):
            loc.remove(rel)
            removed.append(rel)
    return removed


@dataclass
class ResumeState:
    done_pairs: set[str] = field(default_factory=set)
    done_videos: set[str] = field(default_factory=set)  # every pair of the video done, or the video failed
    failed_uris: set[str] = field(default_factory=set)  # videos that failed as a whole
    committed_keys: set[str] = field(default_factory=set)  # keys of pairs not (yet) marked done
    samples_committed: int = 0

    @classmethod
    def load(cls, loc: Location) -> "ResumeState":
        if not loc.exists(MANIFEST_DIR) and not loc.exists(PROGRESS_DIR):
            return cls()
        progress = read_progress(loc).to_pylist()
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
        keys = read_manifest(loc).column("key").to_pylist()
        # keys whose pair is done are never produced again; only the others need a check
        pending = {k for k in keys if pair_of(k) not in done_pairs}
        return cls(done_pairs, done_videos, failed_uris, pending, len(keys))

    def is_video_done(self, video_id: str | None, video_uri: str) -> bool:
        return video_uri in self.failed_uris or (video_id is not None and video_id in self.done_videos)
