"""Which samples and failures the preview shows, read without touching the rest of the dataset.

Samples: `per_task` keys spread evenly over each task's manifest (sorted by key, so over
videos), read from only the shards that hold them. Failures: grouped by stage and reason
in Arrow, with a few example rows each. Both costs stay bounded as the dataset grows,
except one pass over the manifest's key column and the failures table.
"""
from __future__ import annotations

import json
import tarfile
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from datagen.io.storage import Location

EXAMPLES_PER_REASON = 3


@dataclass
class RawSample:
    """A sample as stored: its JSON as a plain dict (unknown fields kept) and its media bytes."""

    key: str
    record: dict[str, Any]
    media: dict[str, bytes] = field(default_factory=dict)


def spread(n_total: int, n: int) -> list[int]:
    """`n` indices spread evenly over `range(n_total)`, first and last included."""
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(i) for i in np.linspace(0, n_total - 1, n).round()})


def choose(manifest: pa.Table, task_name: str, per_task: int) -> dict[str, list[str]]:
    """shard -> keys to show of one task."""
    rows = manifest.filter(pc.equal(manifest.column("task"), task_name)).sort_by("key")
    picked = rows.take(spread(rows.num_rows, per_task)).to_pydict()
    by_shard: dict[str, list[str]] = defaultdict(list)
    for key, shard in zip(picked["key"], picked["shard"]):
        by_shard[shard].append(key)
    return by_shard


def read_chosen(loc: Location, by_shard: dict[str, list[str]]) -> list[RawSample]:
    """The chosen samples, in key order. Tar headers are walked (a seek past each member's
    data); only the chosen members' bytes are read."""
    out: dict[str, RawSample] = {}
    for shard, keys in sorted(by_shard.items()):
        wanted = set(keys)
        with loc.fs.open(loc.path(shard), "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                key, _, member = info.name.partition(".")
                if key not in wanted or not info.isfile():
                    continue
                data = tar.extractfile(info).read()
                s = out.setdefault(key, RawSample(key, {}))
                if member == "json":
                    s.record = json.loads(data)
                else:
                    s.media[member] = data
    return [out[k] for k in sorted(out)]


def failure_groups(failures: pa.Table) -> list[dict[str, Any]]:
    """One row per (stage, reason), most rows first, each with up to EXAMPLES_PER_REASON examples."""
    if failures.num_rows == 0:
        return []
    counts = failures.group_by(["stage", "reason"], use_threads=False).aggregate([("stage", "count")])
    groups = sorted(counts.to_pylist(), key=lambda g: (-g["stage_count"], g["stage"], g["reason"]))
    for g in groups:
        mask = pc.and_(pc.equal(failures.column("stage"), g["stage"]), pc.equal(failures.column("reason"), g["reason"]))
        g["examples"] = failures.filter(mask).slice(0, EXAMPLES_PER_REASON).select(
            ["input_uri", "key", "detail"]).to_pylist()
    return groups
