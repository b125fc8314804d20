"""WebDataset shard writer: bounded tars per task, written atomically, with manifest parts.

Layout of a dataset directory (local or object storage):
    shards/{task_name}/{prefix}{NNNNNN}.tar   samples of one task (uniform member sets)
    manifest/{task_name}-{prefix}{NNNNNN}.parquet   one part per shard, written last:
                                                  a shard is committed once its part exists
    failures/{prefix}{NNNNNN}.parquet
    stats.json

Tar headers are fixed (mtime, owner, mode) so the same samples give the same bytes.
"""
from __future__ import annotations

import io
import json
import posixpath
import re
import tarfile
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from datagen.io.storage import Location
from schemas.sample import Sample
from schemas.tables import FAILURE_FIELDS, FAILURES_SCHEMA, MANIFEST_SCHEMA
from schemas.tasks import TASK_BY_ID

SHARDS_DIR, MANIFEST_DIR, FAILURES_DIR, PROGRESS_DIR = "shards", "manifest", "failures", "progress"
_TAR_BLOCK = 512
_TAR_TRAILER = 2 * _TAR_BLOCK + tarfile.RECORDSIZE  # end-of-archive blocks + worst-case record padding
_MTIME = 1_700_000_000  # fixed: deterministic shard bytes


@dataclass(frozen=True)
class ShardLimits:
    max_samples: int = 1000  # webdataset's usual shard size; keeps per-shard shuffle meaningful
    max_bytes: int = 512 * 1024 * 1024  # ~0.5 GB: big enough for throughput, small enough to spread over workers


def shard_path(task_name: str, name: str) -> str:
    return f"{SHARDS_DIR}/{task_name}/{name}.tar"


def manifest_part_path(task_name: str, name: str) -> str:
    return f"{MANIFEST_DIR}/{task_name}-{name}.parquet"


def next_shard_index(loc: Location, task_name: str, prefix: str) -> int:
    """First index after every existing shard (committed or not) with this prefix."""
    pat = re.compile(re.escape(prefix) + r"(\d{6})\.tar")
    used = [int(m.group(1)) for p in loc.glob(f"{SHARDS_DIR}/{task_name}/*.tar*")
            if (m := pat.fullmatch(posixpath.basename(p).split(".tmp-")[0]))]
    return max(used, default=-1) + 1


def add_tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append one member with the fixed header (mtime, mode) that makes equal samples equal bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), _MTIME, 0o444
    tar.addfile(info, io.BytesIO(data))


def _tar_size(members: dict[str, bytes]) -> int:
    return sum(_TAR_BLOCK + -(-len(b) // _TAR_BLOCK) * _TAR_BLOCK for b in members.values())


def _label_rows(labels: dict) -> list[dict]:
    return [{"stage": k, "model_id": v.model_id, "revision": v.revision,
             "params_json": json.dumps(v.params, sort_keys=True)} for k, v in sorted(labels.items())]


def manifest_row(sample: Sample, shard: str, dataset_version: int, changed_labels: Iterable[str] = (),
                 json_bytes: bytes | None = None, previous_labels: dict | None = None) -> dict:
    r = sample.record
    s = r.source
    json_size = len(json_bytes if json_bytes is not None else r.to_json())
    members = [{"name": f"{r.key}.{m}", "size_bytes": json_size if m == "json" else len(sample.media[m])}
               for m in r.members()]
    return {
        "key": r.key, "task_id": r.task_id, "task": r.task, "shard": shard, "members": members,
        "sample_bytes": sum(m["size_bytes"] for m in members),
        "video_uri": s.video_uri, "video_id": s.video_id, "shot": s.shot, "pair": s.pair,
        "frame_a": s.frame_a, "frame_b": s.frame_b, "t_a_s": s.t_a_s, "t_b_s": s.t_b_s,
        "labels": _label_rows(r.labels),
        "changed_labels": sorted(changed_labels), "previous_labels": _label_rows(previous_labels or {}),
        "dataset_version": dataset_version, "verify_score": r.verify.get("score"),
    }


class _OpenShard:
    def __init__(self, loc: Location, rel: str):
        self.rel = rel
        self.staged = loc.stage(rel)  # one PUT on object stores, a renamed temp file on disk
        self.file = self.staged.file
        # "w", not the stream mode "w|": the stream mode re-slices a 10 kB buffer per write
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)
        self.rows: list[dict] = []
        self.bytes = 0


class TaskShardWriter:
    """Writes samples of one task into bounded shards; every sample must have the same members."""

    def __init__(self, loc: Location, task_name: str, *, limits: ShardLimits = ShardLimits(),
                 prefix: str = "", dataset_version: int = 1):
        self.loc, self.task_name, self.limits, self.prefix = loc, task_name, limits, prefix
        self.dataset_version = dataset_version
        self.index = next_shard_index(loc, task_name, prefix)
        self.member_set: tuple[str, ...] | None = None
        self.committed: list[str] = []  # shard paths
        self._open: _OpenShard | None = None
        self._keys: set[str] = set()

    def add(self, sample: Sample, changed_labels: Iterable[str] = (), previous_labels: dict | None = None) -> None:
        r = sample.record
        if r.task != self.task_name:
            raise ValueError(f"sample {r.key} is task {r.task!r}, writer is for {self.task_name!r}")
        members = tuple(r.members())
        if self.member_set is None:
            self.member_set = members
        elif members != self.member_set:
            raise ValueError(f"sample {r.key} has members {members}, this task's shards hold {self.member_set}")
        missing = [m for m in members[1:] if m not in sample.media]
        if missing:
            raise ValueError(f"sample {r.key} lacks media for members {missing}")
        if r.key in self._keys:
            raise ValueError(f"duplicate key {r.key} in one write")
        payload = {"json": r.to_json(), **{m: sample.media[m] for m in members[1:]}}
        size = _tar_size(payload)
        sh = self._open
        if sh is not None and (len(sh.rows) >= self.limits.max_samples
                               or sh.bytes + size + _TAR_TRAILER > self.limits.max_bytes):
            self.commit()
            sh = None
        if sh is None:
            name = f"{self.prefix}{self.index:06d}"
            self.index += 1
            sh = self._open = _OpenShard(self.loc, shard_path(self.task_name, name))
        for m, data in payload.items():
            add_tar_member(sh.tar, f"{r.key}.{m}", data)
        sh.bytes += size
        sh.rows.append(manifest_row(sample, sh.rel, self.dataset_version, changed_labels, payload["json"],
                                    previous_labels))
        self._keys.add(r.key)

    def commit(self) -> None:
        """Close the open shard: rename it to its final name, then write its manifest part."""
        sh, self._open = self._open, None
        if sh is None:
            return
        sh.tar.close()
        sh.staged.commit()
        name = posixpath.basename(sh.rel)[: -len(".tar")]
        table = pa.Table.from_pylist(sh.rows, schema=MANIFEST_SCHEMA)
        write_parquet(self.loc, manifest_part_path(self.task_name, name), table)
        self.committed.append(sh.rel)

    def abort(self) -> None:
        """Drop the open shard (its temporary file), e.g. after an exception."""
        sh, self._open = self._open, None
        if sh is None:
            return
        sh.staged.abort()


class DatasetWriter:
    """Routes samples to per-task shard writers and failure rows to the failures table.

    Use as a context manager: a clean exit commits every open shard; an exception aborts
    them (no file with a final shard name is left for a partial shard).
    """

    def __init__(self, url: str | Location, *, limits: ShardLimits = ShardLimits(), prefix: str = "",
                 dataset_version: int = 1):
        self.loc = url if isinstance(url, Location) else Location.parse(url)
        self.limits, self.prefix, self.dataset_version = limits, prefix, dataset_version
        self.writers: dict[str, TaskShardWriter] = {}
        self.failures: list[dict] = []
        self.loc.makedirs()

    def add(self, sample: Sample, changed_labels: Iterable[str] = (), previous_labels: dict | None = None) -> None:
        name = TASK_BY_ID[sample.record.task_id].name
        w = self.writers.get(name)
        if w is None:
            w = self.writers[name] = TaskShardWriter(self.loc, name, limits=self.limits, prefix=self.prefix,
                                                     dataset_version=self.dataset_version)
        w.add(sample, changed_labels, previous_labels)

    def add_failure(self, **row: Any) -> None:
        unknown = set(row) - set(FAILURE_FIELDS)
        if unknown:
            raise ValueError(f"unknown failure fields {sorted(unknown)}; allowed: {FAILURE_FIELDS}")
        self.failures.append({f: (None if row.get(f) is None else str(row[f])) for f in FAILURE_FIELDS})

    def close(self) -> list[str]:
        for w in self.writers.values():
            w.commit()
        if self.failures:
            write_failures(self.loc, self.failures, self.prefix)
            self.failures = []
        return [p for w in self.writers.values() for p in w.committed]

    def abort(self) -> None:
        for w in self.writers.values():
            w.abort()

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_parquet(loc: Location, rel: str, table: pa.Table) -> None:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")
    loc.write_bytes(rel, buf.getvalue().to_pybytes())


def write_failures(loc: Location, rows: list[dict], prefix: str = "") -> str:
    """Write one failures part under a fresh name; returns its relative path."""
    rel = f"{FAILURES_DIR}/{prefix}{uuid.uuid4().hex[:16]}.parquet"
    write_parquet(loc, rel, pa.Table.from_pylist(rows, schema=FAILURES_SCHEMA))
    return rel
