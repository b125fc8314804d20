"""Per-task quotas (`assemble.task_shares`): which task samples are written, and how far each task fell short.

Shares are normalised over the tasks they name (tasks left out are not limited). Among a
set of candidate samples, a task may write at most `share x (candidates of all named
tasks)`; the rest of a task over its share is dropped, its pair records `over_share`.
Which samples stay is decided by a hash of the sample key (lowest first), so the same
inputs always give the same choice, whatever order they arrive in. The pipeline applies
this per assemble batch (its batch of pairs), so a run's totals drift from the shares by
at most one sample per task per batch; stats.json reports the run's real figures.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from typing import Any

OVER_SHARE = "over_share"


def _rank(key: str) -> bytes:
    return hashlib.sha1(key.encode()).digest()


def normalised(shares: dict[str, float]) -> dict[str, float]:
    total = sum(shares.values())
    return {t: s / total for t, s in shares.items()} if total > 0 else {}


def quotas(offered: dict[str, int], shares: dict[str, float]) -> dict[str, float]:
    """Target samples per named task: its share of the samples all named tasks offer."""
    shares = normalised(shares)
    total = sum(offered.get(t, 0) for t in shares)
    return {t: s * total for t, s in shares.items()}


def select(candidates: list[tuple[str, str]], shares: dict[str, float]) -> set[str]:
    """Keys (of (key, task) candidates) to write: each named task up to its quota, lowest key hash first.

    The quota's fraction is rounded by the hash of the task's candidate set, so over many
    sets the written counts follow the shares without a bias from always rounding down.
    """
    by_task: dict[str, list[str]] = defaultdict(list)
    for key, task in candidates:
        by_task[task].append(key)
    quota = quotas({t: len(k) for t, k in by_task.items()}, shares)
    keep = set()
    for task, keys in by_task.items():
        keys = sorted(keys, key=_rank)
        if task not in quota:
            keep.update(keys)
            continue
        whole, frac = divmod(quota[task], 1.0)
        coin = int.from_bytes(_rank("".join(keys))[:8], "big") / 2**64
        keep.update(keys[:min(len(keys), int(whole) + (coin < frac))])
    return keep


def report(written: dict[str, int], dropped: dict[str, int], shares: dict[str, float]) -> dict[str, Any]:
    """Per named task: target share, written, dropped over share, and the shortfall against its quota."""
    offered = {t: written.get(t, 0) + dropped.get(t, 0) for t in shares}
    total_written = sum(written.get(t, 0) for t in shares)
    out = {}
    for task, quota in quotas(offered, shares).items():
        n = written.get(task, 0)
        out[task] = {"target_share": round(normalised(shares)[task], 4),
                     "share": round(n / total_written, 4) if total_written else 0.0,
                     "written": n, "dropped_over_share": dropped.get(task, 0),
                     "shortfall": max(0, math.ceil(quota - n - 1e-9))}
    return out


def dataset_report(loc: Any, shares: dict[str, float]) -> dict[str, Any]:
    """`report` over a whole dataset directory: written from the manifest, dropped from the progress record."""
    import json
    from collections import Counter

    from datagen.io.tables import read_manifest
    from datagen.pipeline.progress import read_progress

    written = Counter(read_manifest(loc).column("task").to_pylist())
    dropped = Counter(t for s in read_progress(loc).column("skipped_json").to_pylist() if s
                      for t, why in json.loads(s).items() if why == OVER_SHARE)
    return report(dict(written), dict(dropped), shares)
