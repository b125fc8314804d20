"""Resume state of a run: which pairs and videos are done, from the progress table.

The progress table is the union of the write attempts' commit records (commit.py holds
the protocol and why it is exactly-once): a pair listed there is committed, samples and
all; a pair listed nowhere is recomputed. Partial writes are rolled back before this is read.

How the resume state reaches the workers: one Ray actor, `ResumeIndex`, loads it from the
progress table (on the driver's node, not in the driver's process), and every task asks
it about its own rows only: ingest sends its batch's URIs (before it reads a byte) and
then their content ids, the pairs stage its pair keys; each gets one bool per row back.
The write tasks need nothing: a pair's samples and its commit record are one write. A
task therefore receives O(its own rows) of resume data, whatever the size of the dataset;
before, the whole done-pair set travelled to every CPU task in `fn_kwargs`.
Chosen over the alternatives because:
- a Ray Data join of the sources against the progress table is a hash-shuffle barrier
  (no video is ingested before every source is listed and shuffled) with its own
  aggregator actors to reserve CPUs for; a lookup keeps the pipeline streaming from its
  first source row;
- carrying a video's done-pair set in its own row needs that join (or a group-by) anyway;
- one copy of the state lives in one process, loaded with Arrow (a few hundred MB at ten
  million samples), and the driver never reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.compute as pc

from datagen.io.shards import MANIFEST_DIR, PROGRESS_DIR
from datagen.io.storage import Location
from datagen.io.tables import count_manifest_rows, read_table
from datagen.video.windows import window_id_mask
from schemas.tables import PROGRESS_SCHEMA


def read_progress(loc: Location, columns: list[str] | None = None) -> pa.Table:
    return read_table(loc, PROGRESS_DIR, PROGRESS_SCHEMA, columns)


@dataclass
class ResumeState:
    """What earlier attempts finished. Lives in one process (the ResumeIndex actor, or a test)."""

    done_pairs: set[str] = field(default_factory=set)
    done_videos: set[str] = field(default_factory=set)  # every pair of the video done
    failed_uris: set[str] = field(default_factory=set)  # videos that failed as a whole
    samples_committed: int = 0
    # this run's listings: URI -> the listing position that claimed it (a retried task asks
    # again with the same position and gets the same answer; another position is a repeat)
    listed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, loc: Location, retry_failed: frozenset[str] = frozenset()) -> "ResumeState":
        """`retry_failed`: permanent failure reasons to re-open (their pairs and videos are not done)."""
        if not loc.exists(MANIFEST_DIR) and not loc.exists(PROGRESS_DIR):
            return cls()
        progress = read_progress(loc, ["pair_key", "video_id", "video_uri", "pairs_in_video", "status", "reason"])
        if retry_failed:
            reopened = pc.and_(pc.equal(progress["status"], "failed"),
                               pc.is_in(progress["reason"], value_set=pa.array(sorted(retry_failed))))
            progress = progress.filter(pc.invert(pc.fill_null(reopened, False)))
        has_pair = pc.is_valid(progress["pair_key"])
        failed = progress.filter(pc.invert(has_pair))
        # a window of a long video that failed for good is done, its video is not (windows.py)
        window = window_id_mask(failed["video_id"])
        # failed at video level: by URI, since a duplicate copy fails while its twin's id is still in work
        failed_uris = set(failed.filter(pc.invert(window))["video_uri"].drop_null().to_pylist())
        pairs = progress.filter(has_pair)
        per_video = pairs.group_by("video_id").aggregate([("pair_key", "count_distinct"), ("pairs_in_video", "max")])
        finished = pc.greater_equal(per_video["pair_key_count_distinct"], per_video["pairs_in_video_max"])
        done_videos = set(per_video.filter(pc.fill_null(finished, False))["video_id"].to_pylist())
        done_videos |= set(failed.filter(window)["video_id"].to_pylist())
        done_pairs = set(pc.unique(pairs["pair_key"]).to_pylist())
        return cls(done_pairs, done_videos, failed_uris, count_manifest_rows(loc))

    # --- the questions tasks ask, one answer per row of their own ---
    def sources_done(self, uris: list[str], positions: list[str]) -> list[bool]:
        """True for a video that failed as a whole, or a URI already listed at another position."""
        return [u in self.failed_uris or self.listed.setdefault(u, p) != p for u, p in zip(uris, positions)]

    def videos_done(self, uris: list[str], video_ids: list[str | None]) -> list[bool]:
        return [u in self.failed_uris or (v is not None and v in self.done_videos) for u, v in zip(uris, video_ids)]

    def pairs_done(self, pair_keys: list[str]) -> list[bool]:
        return [k in self.done_pairs for k in pair_keys]

    def is_video_done(self, video_id: str | None, video_uri: str) -> bool:
        return self.videos_done([video_uri], [video_id])[0]

    def summary(self) -> dict[str, int]:
        return {"pairs_done": len(self.done_pairs), "samples_committed": self.samples_committed,
                "videos_listed": len(self.listed)}


class ResumeIndex:
    """Ray actor holding the one ResumeState of a run; tasks query it with their own rows."""

    def __init__(self, url: str, retry_failed: frozenset[str] = frozenset()):
        self.state = ResumeState.load(Location.parse(url), retry_failed)

    def ask(self, question: str, *args: list) -> list[bool]:
        return getattr(self.state, question)(*args)

    def summary(self) -> dict[str, int]:
        return self.state.summary()


def on_driver_node(cls: type, *args: Any) -> Any:
    """An actor of `cls` holding run state, pinned to the driver's node: a worker node that dies
    must not take the run's state with it. Needs no CPU."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(cls).remote(*args)


class ResumeClient:
    """What a task holds: the actor's handle (a few hundred bytes pickled), with the same
    questions as ResumeState, each one remote call over the task's own rows."""

    def __init__(self, handle: Any):
        self.handle = handle

    @classmethod
    def start(cls, url: str, retry_failed: frozenset[str] = frozenset()) -> "ResumeClient":
        return cls(on_driver_node(ResumeIndex, url, retry_failed))

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

    def summary(self) -> dict[str, int]:
        import ray

        return ray.get(self.handle.summary.remote())
