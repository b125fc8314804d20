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
TAR_BLOCK = 512


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


def choose(manifest: pa.Table, task_name: str, per_task: int) -> dict[str, list[tuple[str, int]]]:
    """shard -> (key, byte offset of the sample's first tar header) of the samples to show.

    A shard's manifest part lists its samples in the order they were written, each with
    its members' sizes, so a sample's offset is the sum of the tar blocks before it."""
    rows = manifest.filter(pc.equal(manifest.column("task"), task_name))
    if rows.num_rows == 0:
        return {}
    members = rows.column("members").combine_chunks()
    sizes = pc.struct_field(pc.list_flatten(members), "size_bytes").to_numpy(zero_copy_only=False)
    blocks = TAR_BLOCK + -(-sizes // TAR_BLOCK) * TAR_BLOCK  # a header, then the data padded to blocks
    row_bytes = np.bincount(pc.list_parent_indices(members).to_numpy(), weights=blocks, minlength=rows.num_rows)
    shard_ids = pc.dictionary_encode(rows.column("shard")).combine_chunks().indices.to_numpy()
    order = np.argsort(shard_ids, kind="stable")  # file order kept within each shard
    ends = np.cumsum(row_bytes[order])
    firsts = np.r_[True, shard_ids[order][1:] != shard_ids[order][:-1]]
    starts_of_group = np.maximum.accumulate(np.where(firsts, ends - row_bytes[order], 0))
    offsets = np.empty(rows.num_rows, np.int64)
    offsets[order] = ends - row_bytes[order] - starts_of_group
    keys = rows.column("key").to_pylist()
    shards = rows.column("shard").to_pylist()
    by_key = sorted(range(rows.num_rows), key=keys.__getitem__)
    by_shard: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for i in (by_key[j] for j in spread(rows.num_rows, per_task)):
        by_shard[shards[i]].append((keys[i], int(offsets[i])))
    return by_shard


def read_chosen(loc: Location, by_shard: dict[str, list[tuple[str, int]]]) -> list[RawSample]:
    """The chosen samples, in key order, each read at its offset; a shard whose layout does
    not match its manifest (rewritten by hand, another writer) is walked header by header."""
    out: dict[str, RawSample] = {}
    for shard, chosen in sorted(by_shard.items()):
        with loc.fs.open(loc.path(shard), "rb") as f:
            try:
                for key, offset in chosen:
                    out[key] = _read_at(f, key, offset)
            except _NotThere:
                f.seek(0)
                out.update(_walk(f, {k for k, _ in chosen}))
    return [out[k] for k in sorted(out)]


class _NotThere(Exception):
    """The tar header at a sample's computed offset is not that sample's."""


def _read_at(f, key: str, offset: int) -> RawSample:
    f.seek(offset)
    sample = RawSample(key, {})
    while True:
        at = f.tell()
        head = f.read(TAR_BLOCK)
        if len(head) < TAR_BLOCK or head.count(0) == TAR_BLOCK:
            break  # end of the archive
        try:
            info = tarfile.TarInfo.frombuf(head, tarfile.ENCODING, "surrogateescape")
        except tarfile.HeaderError:
            raise _NotThere(key) from None
        name, _, member = info.name.partition(".")
        if name != key:
            if at == offset:
                raise _NotThere(key)
            break  # the next sample starts here
        data = f.read(info.size)
        f.seek(-(-info.size // TAR_BLOCK) * TAR_BLOCK - info.size, 1)
        if member == "json":
            sample.record = json.loads(data)
        else:
            sample.media[member] = data
    if not sample.record:
        raise _NotThere(key)
    return sample


def _walk(f, wanted: set[str]) -> dict[str, RawSample]:
    out: dict[str, RawSample] = {}
    with tarfile.open(fileobj=f, mode="r:") as tar:
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
    return out


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
