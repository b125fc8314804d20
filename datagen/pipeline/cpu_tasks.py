"""What the CPU stages run as Ray tasks: the stage itself, with resume and duplicate checks around it.

Kept apart from the runner on purpose: a Ray worker imports the module that defines the
function or actor class it runs, and the runner imports every model stage (torch and
transformers, ~3.6 s of CPU per process, measured). The task workers and helper actors of
a job (tens per node) import this module and the CPU stages' own, well under a second.
tests/pipeline/test_light_imports.py keeps it that way.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

from datagen.config import to_dict
from datagen.pipeline.costs import report_batch
from datagen.video.sources import SOURCE_POS
from schemas import columns as C
from schemas.members import pair_key
from stages.base import Stage
from stages.ingest import IngestStage
from stages.pairs import PairsStage

# one stage object per worker process, built on first use
_STAGE_CACHE: dict[str, Stage] = {}


class VideoRegistry:
    """Ray actor: the first URI to claim a video id owns it. Copies of one file under other
    names have the same content id and would otherwise write the same sample keys twice."""

    def __init__(self):
        self.owner: dict[str, str] = {}

    def claim(self, pairs: list[tuple[str, str]]) -> list[str]:
        return [self.owner.setdefault(vid, uri) for vid, uri in pairs]


def cpu_stage(batch, stage_cls: type[Stage], config: Any, resume: Any = None, registry: Any = None, ledger: Any = None):
    key = f"{stage_cls.__module__}.{stage_cls.__qualname__}:{json.dumps(to_dict(config), sort_keys=True)}"
    stage = _STAGE_CACHE.get(key)
    if stage is None:
        stage = _STAGE_CACHE[key] = stage_cls(config)
    if stage_cls is IngestStage and resume is not None:
        batch = drop_done_sources(batch, resume)
    out = stage(batch)
    if ledger is not None:
        report_batch(ledger, stage, 0.0)
    if stage_cls is IngestStage:
        if resume is not None:
            out = drop_done_videos(out, resume)
        if registry is not None:
            _mark_duplicates(out, registry)
    if stage_cls is PairsStage:
        out = stamp_pairs_and_drop_done(out, resume)
    return out


def _mark_duplicates(batch: dict[str, list], registry: Any) -> None:
    import ray

    todo = [i for i, f in enumerate(batch[C.FAILED_STAGE]) if f is None and batch[C.VIDEO_ID][i]]
    owners = ray.get(registry.claim.remote([(batch[C.VIDEO_ID][i], batch[C.VIDEO_URI][i]) for i in todo]))
    for i, owner in zip(todo, owners):
        if owner != batch[C.VIDEO_URI][i]:
            C.mark_failed(batch, i, "ingest", "duplicate_video", f"same content as {owner}")


def _keep(batch: dict[str, list], keep: list[bool]) -> dict[str, list]:
    return {c: [v for v, k in zip(col, keep) if k] for c, col in batch.items()}


def drop_done_sources(batch, resume: Any) -> dict[str, list]:
    """Before ingest reads a byte: drop videos that failed as a whole, and repeated listings
    of one URI (two --input sources naming the same file; resume counts each URI once)."""
    cols = batch.to_pydict() if hasattr(batch, "to_pydict") else {c: list(v) for c, v in batch.items()}
    uris = [str(u) for u in cols[C.VIDEO_URI]]
    done = resume.sources_done(uris, [str(p) for p in cols.pop(SOURCE_POS, uris)])
    return _keep(cols, [not d for d in done])


def drop_done_videos(batch: dict[str, list], resume: Any) -> dict[str, list]:
    """After ingest: videos whose every pair is done, by content id (also a renamed copy)."""
    done = resume.videos_done(list(batch[C.VIDEO_URI]), list(batch[C.VIDEO_ID]))
    return _keep(batch, [not d for d in done])


def stamp_pairs_and_drop_done(batch: dict[str, list], resume: Any) -> dict[str, list]:
    """Record how many pairs each video yielded (its batch holds all of them): resume
    knows a video is finished when that many pairs are done."""
    healthy = [f is None for f in batch[C.FAILED_STAGE]]
    per_video = Counter(v for v, h in zip(batch[C.VIDEO_ID], healthy) if h)
    batch["pairs_in_video"] = [per_video.get(v, 0) for v in batch[C.VIDEO_ID]]
    if resume is None:
        return batch
    rows = [i for i, h in enumerate(healthy) if h]
    done = resume.pairs_done([pair_key(batch[C.VIDEO_ID][i], batch[C.SHOT][i], batch[C.PAIR][i]) for i in rows])
    keep = [True] * len(healthy)
    for i, d in zip(rows, done):
        keep[i] = not d
    return _keep(batch, keep)
