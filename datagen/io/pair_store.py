"""The pair store: what a re-label needs, kept once per pair beside the shards.

A pair's record is its row as `assemble` receives it: frames A and B as encoded once, the
measured facts, the caption (with its objects' names and boxes), the segments with their
masks, the depth and edge maps, and each label's provenance. Any labelling stage can then
re-run on it, and assemble rebuild its samples, without decoding a video again.

Layout, written by the same write task (and commit protocol) as the pair's samples:
    pairs/{prefix}{NNNNNN}.tar      one WebDataset sample per pair, keyed by pair key:
                                    `{pk}.json` plus one member per media column
                                    (`{pk}.image_a.jpg`, `{pk}.masks_a.0.png`, ...)
    pairs/{prefix}{NNNNNN}.parquet  its index, written after the tar is renamed
Both count once the write task's commit record exists (datagen/pipeline/commit.py), as
the samples do: a pair's record and its samples commit together.

The samples of the pair (keys), and for a re-labelled version the keys added, removed
and changed against the version it came from, are recorded in the index.
"""
from __future__ import annotations

import io
import json
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from datagen.io.reader import group_members, tar_members
from datagen.io.storage import Location
from schemas import columns as C
from schemas.labels import LABEL_STAGES
from schemas.members import pair_key
from schemas.tables import PAIR_INDEX_SCHEMA

PAIRS_DIR = "pairs"
PAIR_SCHEMA_VERSION = 1
_MTIME = 1_700_000_000  # fixed tar headers: the same pairs give the same bytes
_TAR_BLOCK = 512

# Row columns a record keeps as JSON, decoded so the record reads as data (facts, objects, boxes).
_JSON_COLUMNS = {C.FACTS: "facts", C.CAPTION: "caption", C.SEGMENTS: "segments"}
_SCALAR_COLUMNS = (C.VIDEO_URI, C.VIDEO_ID, C.SHOT, C.PAIR, C.FRAME_A, C.FRAME_B, C.T_A_S, C.T_B_S,
                   C.WIDTH, C.HEIGHT, "pairs_in_video")
MEDIA_COLUMNS = (C.IMAGE_A, C.IMAGE_B, C.MASKS_A, C.MASKS_B, C.DEPTH_A, C.DEPTH_B, C.EDGES_A, C.EDGES_B)
PROVENANCE_STAGES = ("pairs", *LABEL_STAGES)


@dataclass(frozen=True)
class PairStoreLimits:
    max_pairs: int = 1000  # a re-label reads one pair-store tar per task: bounded memory
    max_bytes: int = 512 * 1024 * 1024  # as sample shards: streams well from object storage


def _ext(data: bytes) -> str:
    return "png" if data[:4] == b"\x89PNG" else "jpg"


def encode_pair(row: dict[str, Any], samples: list[str], history: dict[str, Any] | None = None) -> dict[str, bytes]:
    """A labelled pair row -> its pair-store members (`json` first)."""
    media: dict[str, bytes] = {}
    names: dict[str, Any] = {}
    for col in MEDIA_COLUMNS:
        value = row.get(col)
        if isinstance(value, (bytes, bytearray)):
            names[col] = f"{col}.{_ext(value)}"
            media[names[col]] = bytes(value)
        elif isinstance(value, (list, tuple)):
            names[col] = [f"{col}.{i}.{_ext(v)}" for i, v in enumerate(value)]
            media.update(zip(names[col], map(bytes, value)))
    labels = {s: json.loads(row[C.provenance_column(s)]) for s in PROVENANCE_STAGES
              if row.get(C.provenance_column(s))}
    doc = {
        "schema_version": PAIR_SCHEMA_VERSION,
        "pair_key": pair_key(row[C.VIDEO_ID], row[C.SHOT], row[C.PAIR]),
        "source": {c: row.get(c) for c in _SCALAR_COLUMNS},
        **{field: json.loads(row[col]) if row.get(col) else None for col, field in _JSON_COLUMNS.items()},
        "labels": labels,
        "media": names,
        "samples": sorted(samples),
        "history": history or {},
    }
    return {"json": json.dumps(doc, sort_keys=True, ensure_ascii=False).encode("utf-8"), **media}


def decode_pair(members: dict[str, bytes]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pair-store members -> (the row assemble and the labelling stages take, the record's JSON)."""
    doc = json.loads(members["json"])
    if doc.get("schema_version") != PAIR_SCHEMA_VERSION:
        raise ValueError(f"pair {doc.get('pair_key')}: pair-store schema_version {doc.get('schema_version')}, "
                         f"this datagen reads {PAIR_SCHEMA_VERSION}")
    row: dict[str, Any] = dict(doc["source"])
    for col, field in _JSON_COLUMNS.items():
        row[col] = None if doc[field] is None else json.dumps(doc[field], ensure_ascii=False)
    for col in MEDIA_COLUMNS:
        name = doc["media"].get(col)
        row[col] = None if name is None else [members[n] for n in name] if isinstance(name, list) else members[name]
    for s in PROVENANCE_STAGES:
        prov = doc["labels"].get(s)
        row[C.provenance_column(s)] = None if prov is None else json.dumps(prov, sort_keys=True)
    row.update(dict.fromkeys(C.FAILURE_COLUMNS))
    return row, doc


def member_names(doc: dict[str, Any]) -> list[str]:
    """Every member a record must have, `json` first."""
    out = ["json"]
    for name in doc["media"].values():
        out += name if isinstance(name, list) else [name]
    return out


class PairStoreWriter:
    """Writes pair records into bounded tars under `pairs/`, each committed by its index part.

    Use as a context manager, as DatasetWriter: a clean exit commits, an exception aborts.
    """

    def __init__(self, loc: Location, prefix: str, limits: PairStoreLimits = PairStoreLimits(),
                 dataset_version: int = 1):
        self.loc, self.prefix, self.limits, self.dataset_version = loc, prefix, limits, dataset_version
        self.index = 1 + max((int(posixpath.basename(p)[len(prefix):-len(".tar")])
                              for p in loc.glob(f"{PAIRS_DIR}/{prefix}*.tar")
                              if posixpath.basename(p)[len(prefix):-len(".tar")].isdigit()), default=-1)
        self._tar: tarfile.TarFile | None = None
        self._staged = self._rel = None
        self._rows: list[dict] = []
        self._bytes = 0

    def add(self, members: dict[str, bytes], changes: dict[str, list[str]] | None = None) -> None:
        doc = json.loads(members["json"])
        size = sum(_TAR_BLOCK + -(-len(b) // _TAR_BLOCK) * _TAR_BLOCK for b in members.values())
        if self._tar is not None and (len(self._rows) >= self.limits.max_pairs
                                      or self._bytes + size > self.limits.max_bytes):
            self.commit()
        if self._tar is None:
            self._rel = f"{PAIRS_DIR}/{self.prefix}{self.index:06d}.tar"
            self.index += 1
            self._staged = self.loc.stage(self._rel)  # one PUT on object stores, a renamed temp file on disk
            self._tar = tarfile.open(fileobj=self._staged.file, mode="w", format=tarfile.USTAR_FORMAT)
        pk = doc["pair_key"]
        start = self._tar.offset
        for name, data in members.items():
            info = tarfile.TarInfo(f"{pk}.{name}")
            info.size, info.mtime, info.mode = len(data), _MTIME, 0o444
            self._tar.addfile(info, io.BytesIO(data))
        self._bytes += size
        changes = changes or {}
        self._rows.append({
            "pair_key": pk, "video_id": doc["source"][C.VIDEO_ID], "video_uri": doc["source"][C.VIDEO_URI],
            "shard": self._rel, "pair_bytes": sum(len(b) for b in members.values()),
            "tar_offset": start, "tar_bytes": self._tar.offset - start,
            "members": [{"name": f"{pk}.{n}", "size_bytes": len(members[n])} for n in members],
            "labels": [{"stage": s, "model_id": p["model_id"], "revision": p.get("revision", ""),
                        "params_json": json.dumps(p.get("params", {}), sort_keys=True)}
                       for s, p in sorted(doc["labels"].items())],
            "samples": doc["samples"], "added": changes.get("added", []), "removed": changes.get("removed", []),
            "changed": changes.get("changed", []), "dataset_version": self.dataset_version,
        })

    def commit(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        self._staged.commit()
        buf = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(self._rows, schema=PAIR_INDEX_SCHEMA), buf, compression="zstd")
        self.loc.write_bytes(index_part(self._rel), buf.getvalue().to_pybytes())
        self._tar = self._staged = None
        self._rows, self._bytes = [], 0

    def abort(self) -> None:
        if self._tar is None:
            return
        self._staged.abort()
        self._tar = self._staged = None

    def __enter__(self) -> "PairStoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.commit() if exc_type is None else self.abort()


def index_part(tar_rel: str) -> str:
    return tar_rel[: -len(".tar")] + ".parquet"


def has_pair_store(loc: Location) -> bool:
    return bool(loc.glob(f"{PAIRS_DIR}/*.parquet"))


def read_pair_index(loc: Location) -> pa.Table:
    files = [loc.path(p) for p in loc.glob(f"{PAIRS_DIR}/*.parquet")]
    if not files:
        return PAIR_INDEX_SCHEMA.empty_table()
    return pads.dataset(files, schema=PAIR_INDEX_SCHEMA, format="parquet", filesystem=loc.fs).to_table()


def iter_pairs(loc: Location, tar_rel: str) -> Iterator[dict[str, bytes]]:
    """The records of one pair-store tar, as member dicts (`json`, `image_a.jpg`, ...), in order."""
    for raw in group_members(tar_members([{"url": loc.url_of(tar_rel)}])):
        yield {k: v for k, v in raw.items() if not k.startswith("__")}


def read_pair_range(loc: Location, tar_rel: str, offset: int, span: int) -> Iterator[dict[str, bytes]]:
    """The records in bytes [offset, offset + span) of a pair-store tar (index `tar_offset`/`tar_bytes`):
    one range read, so many tasks can share one big tar."""
    with loc.open(tar_rel) as f:
        f.seek(offset)
        data = f.read(span)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = [{"fname": i.name, "data": tar.extractfile(i).read(), "__url__": tar_rel} for i in tar if i.isfile()]
    for raw in group_members(members):
        yield {k: v for k, v in raw.items() if not k.startswith("__")}


def read_chunks(loc: Location, pairs_per_chunk: int) -> list[dict[str, Any]]:
    """The pair store as byte ranges of `pairs_per_chunk` consecutive records: a re-label's input rows."""
    index = read_pair_index(loc).select(["shard", "tar_offset", "tar_bytes"]).to_pylist()
    chunks: list[dict[str, Any]] = []
    for row in sorted(index, key=lambda r: (r["shard"], r["tar_offset"])):
        last = chunks[-1] if chunks else None
        if last and last["tar"] == row["shard"] and last["pairs"] < pairs_per_chunk \
                and last["offset"] + last["span"] == row["tar_offset"]:
            last["span"] += row["tar_bytes"]
            last["pairs"] += 1
        else:
            chunks.append({"tar": row["shard"], "offset": row["tar_offset"], "span": row["tar_bytes"], "pairs": 1})
    return chunks


def changes(loc: Location) -> dict[str, list[str]]:
    """Keys added, removed and changed by the re-label that wrote this version."""
    t = read_pair_index(loc).select(["added", "removed", "changed"]).to_pydict()
    return {k: sorted({key for keys in t[k] for key in keys}) for k in ("added", "removed", "changed")}


def pair_store_bytes(loc: Location) -> int:
    return sum(loc.size(p) for p in loc.glob(f"{PAIRS_DIR}/*"))
