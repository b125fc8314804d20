"""Resume state of a run: what is committed, what is done, and cleaning up after a kill.

Commit order inside one write task: shards (each renamed when complete, then its manifest
part), failures part, and last the progress part naming the pairs it finished. A kill at
any point leaves either temporary files (deleted here), shards without manifest parts
(deleted here: never visible to readers as committed), or committed samples whose pair
is not yet marked done; those pairs are recomputed and their already-committed keys are
skipped by the writer, so nothing is duplicated or lost.

How the resume state reaches the workers: one Ray actor, `ResumeIndex`, loads it from the
progress and manifest tables (on the driver's node, not in the driver's process), and every
task asks it about its own rows only: ingest sends its batch's URIs and content ids, the
pairs stage its pair keys, a write task its sample keys; each gets one bool per row back.
A task therefore receives O(its own rows) of resume data, whatever the size of the
dataset; before, the whole done-pair set travelled to every worker in `fn_kwargs`.
Chosen over the alternatives because:
- a Ray Data join of the sources against the progress table is a hash-shuffle barrier
  (no video is ingested before every source is listed and shuffled) that needs its own
  aggregator actors; a lookup keeps the pipeline streaming from its first source row;
- carrying a video's done-pair set in its own row needs that join anyway, and the write
  task's committed-key check would have to travel through every stage in between;
- the one copy of the state lives in one process, loaded with Arrow (a few hundred MB at
  ten million samples), and the driver never reads it.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from datagen.io.shards import MANIFEST_DIR, PROGRESS_DIR, SHARDS_DIR, write_parquet
from datagen.io.storage import Location
from datagen.io.tables import committed_shards, read_table
from schemas.tables import MANIFEST_SCHEMA, PROGRESS_SCHEMA

def read_progress(loc: Location, columns: list[str] | None = None) -> pa.Table:
    return read_table(loc, PROGRESS_DIR, PROGRESS_SCHEMA, columns)


def write_progress(loc: Location, rows: list[dict], prefix: str) -> None:
    if rows:
        write_parquet(loc, f"{PROGRESS_DIR}/{prefix}{uuid.uuid4().hex[:12]}.parquet",
                      pa.Table.from_pylist(rows, schema=PROGRESS_SCHEMA))


def clean_partial_writes(loc: Location) -> list[str]:
    """Delete temporary files and shards that never got their manifest part (one listing of
    each folder, not a request per shard: at a million shards that matters)."""
    removed = []
    for rel in loc.glob("**/*.tmp-*"):
        loc.remove(rel)
        removed.append(rel)
    committed = committed_shards(loc)
    for rel in loc.glob(f"{SHARDS_DIR}/*/*.tar"):
        if rel not in committed:
            loc.remove(rel)
            removed.append(rel)
    return removed


def _pair_of_keys(keys: pa.Array) -> pa.Array:
    """schemas.members.pair_of over a column: the sample key minus its `_tNN` task suffix."""
    return pc.replace_substring_regex(keys, r"_t\d+$", "")


@dataclass
class ResumeState:
    """What earlier attempts finished. Lives in one process (the ResumeIndex actor, or a test)."""

    done_pairs: set[str] = field(default_factory=set)
    done_videos: set[str] = field(default_factory=set)  # every pair of the video done
    failed_uris: set[str] = field(default_factory=set)  # videos that failed as a whole
    committed_keys: set[str] = field(default_factory=set)  # keys of pairs not (yet) marked done
    samples_committed: int = 0
    # this run's listings: URI -> the listing position that claimed it (a retried task asks
    # again with the same position and gets the same answer; another position is a repeat)
    listed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, loc: Location) -> "ResumeState":
        if not loc.exists(MANIFEST_DIR) and not loc.exists(PROGRESS_DIR):
            return cls()
        progress = read_progress(loc, ["pair_key", "video_id", "video_uri", "pairs_in_video"])
        has_pair = pc.is_valid(progress["pair_key"])
        # failed at video level: by URI, since a duplicate copy fails while its twin's id is still in work
        failed_uris = set(progress.filter(pc.invert(has_pair))["video_uri"].drop_null().to_pylist())
        pairs = progress.filter(has_pair)
        done_pairs_arr = pc.unique(pairs["pair_key"])
        per_video = pairs.group_by("video_id").aggregate([("pair_key", "count_distinct"), ("pairs_in_video", "max")])
        finished = pc.greater_equal(per_video["pair_key_count_distinct"], per_video["pairs_in_video_max"])
        done_videos = set(per_video.filter(pc.fill_null(finished, False))["video_id"].to_pylist())
        keys = read_table(loc, MANIFEST_DIR, MANIFEST_SCHEMA, ["key"])["key"]
        # keys whose pair is done are never produced again; only the others need a check
        pending = pc.filter(keys, pc.invert(pc.is_in(_pair_of_keys(keys), value_set=done_pairs_arr)))
        return cls(set(done_pairs_arr.to_pylist()), done_videos, failed_uris, set(pending.to_pylist()), len(keys))

    # --- the questions tasks ask, one answer per row of their own ---
    def sources_done(self, uris: list[str], positions: list[str]) -> list[bool]:
        """True for a video that failed as a whole, or a URI already listed at another position."""
        return [u in self.failed_uris or self.listed.setdefault(u, p) != p for u, p in zip(uris, positions)]

    def videos_done(self, uris: list[str], video_ids: list[str | None]) -> list[bool]:
        return [u in self.failed_uris or (v is not None and v in self.done_videos) for u, v in zip(uris, video_ids)]

    def pairs_done(self, pair_keys: list[str]) -> list[bool]:
        return [k in self.done_pairs for k in pair_keys]

    def committed(self, keys: list[str]) -> list[bool]:
        return [k in self.committed_keys for k in keys]

    def is_video_done(self, video_id: str | None, video_uri: str) -> bool:
        return self.videos_done([video_uri], [video_id])[0]

    def summary(self) -> dict[str, int]:
        return {"pairs_done": len(self.done_pairs), "samples_committed": self.samples_committed,
                "videos_done": len(self.done_videos) + len(self.failed_uris), "videos_listed": len(self.listed)}


class ResumeIndex:
    """Ray actor holding the one ResumeState of a run; tasks query it with their own rows."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.state = ResumeState.load(Location.parse(url, **(storage_options or {})))

    def ask(self, question: str, *args: list) -> list[bool]:
        return getattr(self.state, question)(*args)

    def summary(self) -> dict[str, int]:
        return self.state.summary()


class ResumeClient:
    """What a task holds: the actor's handle (a few hundred bytes pickled), with the same
    questions as ResumeState, each one remote call over the task's own rows."""

    def __init__(self, handle: Any):
        self.handle = handle

    @classmethod
    def start(cls, url: str, storage_options: dict[str, Any] | None = None) -> "ResumeClient":
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # pinned to the driver's node: a worker node that dies must not take the run's state with it
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        return cls(ray.remote(num_cpus=0, scheduling_strategy=here)(ResumeIndex).remote(url, storage_options))

    def _ask(self, question: str, *args: Iterable) -> list[bool]:
        import ray

        args = tuple(list(a) for a in args)
        return ray.get(self.handle.ask.remote(question, *args)) if args[0] else []

    def sources_done(self, uris, positions):
        return self._ask("sources_done", uris, positions)

    def videos_done(self, uris, video_ids):
        return self._ask("videos_done", uris, video_ids)

    def pairs_done(self, pair_keys):
        return self._ask("pairs_done", pair_keys)

    def committed(self, keys):
        return self._ask("committed", keys)

    def summary(self) -> dict[str, int]:
        import ray

        return ray.get(self.handle.summary.remote())
