"""`datagen validate`: is a dataset directory intact and true to the schema?"""
from __future__ import annotations

import io
import json
import os
import tarfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import jsonschema
from PIL import Image

from datagen.io import pair_store as P
from datagen.io.reader import shard_rels
from datagen.io.storage import Location
from datagen.io.tables import read_manifest
from schemas import columns as C
from schemas.jsonschema import load_schema
from schemas.members import pair_of
from schemas.sample import SampleRecord
from schemas.tasks import TASK_BY_NAME, ImageKind

_MODES = {ImageKind.rgb: {"RGB"}, ImageKind.depth16: {"I;16", "I;16B", "I"},
          ImageKind.edge: {"L"}, ImageKind.mask: {"L"}}


@dataclass
class ShardReport:
    shard: str
    keys: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # member name -> bytes
    problems: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    shards: int
    samples: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_image(name: str, data: bytes, kind: ImageKind, width: int, height: int) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode, size = im.mode, im.size
    except Exception as e:  # any decoder error means the member is unusable
        return f"{name}: image does not decode ({type(e).__name__}: {e})"
    if mode not in _MODES[kind]:
        return f"{name}: mode {mode} but a {kind.value} member must be {'/'.join(sorted(_MODES[kind]))}"
    if size != (width, height):
        return f"{name}: size {size[0]}x{size[1]} but the JSON says {width}x{height}"
    return None


def _check_sample(key: str, members: dict[str, bytes], task_dir: str, validator) -> list[str]:
    if "json" not in members:
        return [f"sample {key}: missing member {key}.json"]
    try:
        doc = json.loads(members["json"])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"sample {key}: {key}.json is not valid JSON ({e})"]
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        return [f"sample {key}: {key}.json violates the schema at /{'/'.join(map(str, e.path))}: {e.message}"]
    rec = SampleRecord.from_json(doc)
    problems = []
    if rec.key != key:
        problems.append(f"sample {key}: JSON key is {rec.key!r}")
    if rec.task != task_dir:
        problems.append(f"sample {key}: task {rec.task!r} stored under shards/{task_dir}/")
    if TASK_BY_NAME[rec.task].id != rec.task_id:
        problems.append(f"sample {key}: task_id {rec.task_id} does not match task {rec.task!r}")
    expected = set(rec.members())
    missing, extra = expected - set(members), set(members) - expected
    problems += [f"sample {key}: missing member {key}.{m}" for m in sorted(missing)]
    problems += [f"sample {key}: unexpected member {key}.{m}" for m in sorted(extra)]
    for ref in [*rec.prompt.images, rec.target]:
        if ref.member in members:
            p = _check_image(f"sample {key}: {key}.{ref.member}", members[ref.member], ref.kind, ref.width, ref.height)
            if p:
                problems.append(p)
    return problems


def check_shard(loc: Location, rel: str, validator) -> ShardReport:
    rep = ShardReport(rel)
    task_dir = rel.split("/")[-2]
    by_key: dict[str, dict[str, bytes]] = defaultdict(dict)
    order: list[str] = []
    try:
        with loc.open(rel) as f, tarfile.open(fileobj=f, mode="r|") as tar:
            for info in tar:
                if not info.isfile():
                    rep.problems.append(f"{rel}: non-file entry {info.name!r}")
                    continue
                base = os.path.basename(info.name)
                if "/" in info.name or ".." in info.name or "." not in base:
                    rep.problems.append(f"{rel}: unsafe or key-less member name {info.name!r}")
                    continue
                key, ext = base.split(".", 1)
                if key not in by_key:
                    order.append(key)
                data = tar.extractfile(info).read()
                if len(data) != info.size:
                    raise tarfile.ReadError("unexpected end of data")
                by_key[key][ext] = data
                rep.sizes[info.name] = info.size
    except (tarfile.ReadError, EOFError, OSError) as e:
        rep.problems.append(f"{rel}: truncated or unreadable tar ({e})")
    rep.keys = order
    for key in order:
        rep.problems += [f"{rel}: {p}" for p in _check_sample(key, by_key[key], task_dir, validator)]
    return rep


def validate(url: str | Location, progress: Callable[[int, int], None] | None = None) -> ValidationReport:
    loc = url if isinstance(url, Location) else Location.parse(url)
    problems: list[str] = []
    if not loc.exists(""):
        return ValidationReport(0, 0, [f"{loc.url}: no such dataset directory"])
    on_disk = shard_rels(loc)
    manifest = read_manifest(loc).select(["key", "shard", "members"]).to_pylist()
    if not on_disk and not manifest:
        problems.append(f"{loc.url}: no shards and no manifest; is this a datagen dataset directory?")
    validator = jsonschema.Draft202012Validator(load_schema())
    reports: list[ShardReport] = []
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for i, rep in enumerate(pool.map(lambda rel: check_shard(loc, rel, validator), on_disk)):
            reports.append(rep)
            if progress:
                progress(i + 1, len(on_disk))
    for rep in reports:
        problems += rep.problems

    # Manifest and shards must agree exactly.
    by_shard: dict[str, list[dict]] = defaultdict(list)
    for row in manifest:
        by_shard[row["shard"]].append(row)
    disk = set(on_disk)
    for shard in sorted(set(by_shard) - disk):
        problems.append(f"{shard}: listed in the manifest ({len(by_shard[shard])} samples) but missing")
    for rep in reports:
        rows = by_shard.get(rep.shard)
        if rows is None:
            problems.append(f"{rep.shard}: shard is not in the manifest (uncommitted write or stray file)")
            continue
        listed, present = Counter(r["key"] for r in rows), Counter(rep.keys)
        for k in sorted(set(listed) - set(present)):
            problems.append(f"{rep.shard}: manifest lists sample {k} but the shard lacks it")
        for k in sorted(set(present) - set(listed)):
            problems.append(f"{rep.shard}: sample {k} is in the shard but not in the manifest")
        for r in rows:
            for m in r["members"]:
                size = rep.sizes.get(m["name"])
                if size is not None and size != m["size_bytes"]:
                    problems.append(f"{rep.shard}: member {m['name']} is {size} bytes, manifest says {m['size_bytes']}")
    where: dict[str, list[str]] = defaultdict(list)
    for rep in reports:
        for k in rep.keys:
            where[k].append(rep.shard)
    for k, shards in sorted(where.items()):
        if len(shards) > 1:
            problems.append(f"duplicate key {k} in {len(shards)} places: {', '.join(sorted(shards))}")
    for k, n in sorted(Counter(r["key"] for r in manifest).items()):
        if n > 1:
            problems.append(f"manifest: key {k} listed {n} times")
    if P.has_pair_store(loc) or loc.glob(f"{P.PAIRS_DIR}/*.tar"):
        problems += check_pair_store(loc, {r["key"] for r in manifest})
    return ValidationReport(len(on_disk), sum(len(r.keys) for r in reports), problems)


_PAIR_MEDIA_KINDS = {C.IMAGE_A: ImageKind.rgb, C.IMAGE_B: ImageKind.rgb, C.DEPTH_A: ImageKind.depth16,
                     C.DEPTH_B: ImageKind.depth16, C.EDGES_A: ImageKind.edge, C.EDGES_B: ImageKind.edge,
                     C.MASKS_A: ImageKind.mask, C.MASKS_B: ImageKind.mask}


def _check_pair(key: str, members: dict[str, bytes]) -> list[str]:
    where = f"pair {key}"
    try:
        _, doc = P.decode_pair(members)
    except (KeyError, ValueError, TypeError) as e:
        return [f"{where}: record does not decode ({type(e).__name__}: {e})"]
    problems = []
    if doc["pair_key"] != key:
        problems.append(f"{where}: JSON pair_key is {doc['pair_key']!r}")
    expected = set(P.member_names(doc))
    problems += [f"{where}: missing member {key}.{m}" for m in sorted(expected - set(members))]
    problems += [f"{where}: unexpected member {key}.{m}" for m in sorted(set(members) - expected)]
    w, h = doc["source"][C.WIDTH], doc["source"][C.HEIGHT]
    for col, names in doc["media"].items():
        for name in names if isinstance(names, list) else [names]:
            if name in members:
                p = _check_image(f"{where}: {key}.{name}", members[name], _PAIR_MEDIA_KINDS[col], w, h)
                if p:
                    problems.append(p)
    segments = doc.get("segments") or []
    for col in (C.MASKS_A, C.MASKS_B):
        n = len(doc["media"].get(col) or [])
        if col in doc["media"] and n != len(segments):
            problems.append(f"{where}: {n} {col} members for {len(segments)} segments")
    return problems


def check_pair_store(loc: Location, manifest_keys: set[str]) -> list[str]:
    """Pair-store tars and their index agree; every record is whole; samples and pairs match the manifest."""
    problems: list[str] = []
    index = P.read_pair_index(loc).to_pylist()
    listed: dict[str, list[dict]] = defaultdict(list)
    for row in index:
        listed[row["shard"]].append(row)
    tars = loc.glob(f"{P.PAIRS_DIR}/*.tar")
    for rel in sorted(set(listed) - set(tars)):
        problems.append(f"{rel}: listed in the pair index ({len(listed[rel])} pairs) but missing")
    seen: Counter = Counter()
    for rel in tars:
        rows = {r["pair_key"]: r for r in listed.get(rel, [])}
        if not rows:
            problems.append(f"{rel}: pair-store tar is not in the pair index (uncommitted write or stray file)")
        present = set()
        try:
            for members in P.iter_pairs(loc, rel):
                key = json.loads(members["json"])["pair_key"] if "json" in members else "?"
                present.add(key)
                problems += [f"{rel}: {p}" for p in _check_pair(key, members)]
                sizes = {m["name"]: m["size_bytes"] for m in rows.get(key, {}).get("members", [])}
                for name, data in members.items():
                    if sizes.get(f"{key}.{name}", len(data)) != len(data):
                        problems.append(f"{rel}: member {key}.{name} is {len(data)} bytes, the pair index says "
                                        f"{sizes[f'{key}.{name}']}")
        except (tarfile.ReadError, EOFError, OSError, ValueError) as e:
            problems.append(f"{rel}: truncated or unreadable pair-store tar ({e})")
        for k in sorted(set(rows) - present):
            problems.append(f"{rel}: pair index lists pair {k} but the tar lacks it")
        seen.update(present)
    for k, n in sorted(seen.items()):
        if n > 1:
            problems.append(f"pair store: pair {k} stored {n} times")
    samples = {k for r in index for k in r["samples"]}
    for k in sorted(samples - manifest_keys):
        problems.append(f"pair store: pair {pair_of(k)} lists sample {k}, which the manifest lacks")
    for k in sorted(k for k in manifest_keys - samples if pair_of(k) in seen):
        problems.append(f"pair store: sample {k} is in the manifest but its pair's record does not list it")
    for k in sorted({pair_of(k) for k in manifest_keys} - set(seen)):
        problems.append(f"pair store: the manifest has samples of pair {k}, which has no pair-store record")
    return problems
