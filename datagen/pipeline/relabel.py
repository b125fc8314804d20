"""`datagen relabel`: re-run some labelling stages on an existing dataset into a new version.

Depth and edge labels are recomputed from the RGB member of the very sample that holds
them (no video is decoded again). Shards with nothing to relabel are copied byte for
byte; in relabelled shards, only the relabelled members change: every other member is
copied as stored, never re-encoded. Resumable: an input shard is done once its marker
exists in the output; a partially written one is removed and redone.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
import shutil
from collections import Counter
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from datagen import UserError
from datagen.io.reader import raw_samples, shard_urls, to_sample
from datagen.io.shards import FAILURES_DIR, DatasetWriter, ShardLimits, manifest_part_path, write_parquet
from datagen.io.card import write_card
from datagen.io.storage import Location
from datagen.io.tables import compute_stats, read_manifest, read_stats, write_stats
from datagen.pipeline.config import PipelineConfig
from datagen.pipeline.progress import clean_partial_writes
from datagen.prompts import context_prompt
from schemas import columns as C
from schemas.sample import Provenance, Sample

# stage -> task -> (member that holds the label, role of the RGB member it is computed from)
RECIPES = {
    "depth": {"depth_to_image": ("input", "target"), "depth_estimation": ("target", "input")},
    "edges": {"edge_to_image": ("input", "target"), "edge_detection": ("target", "input")},
}
OUTPUT_COLUMN = {"depth": C.DEPTH_A, "edges": C.EDGES_A}
DONE_DIR = "relabel_done"


def _build_stage(name: str, cfg: PipelineConfig):
    """The stage, computing frame A only (relabel feeds it one frame per row)."""
    if name == "depth":
        from stages.depth import DepthStage

        return DepthStage(dataclasses.replace(cfg.depth, frames=["a"]))
    from stages.edges import EdgesStage

    return EdgesStage(dataclasses.replace(cfg.edges, frames=["a"]))


def _members(sample: Sample, where: str) -> tuple[str, Any]:
    rec = sample.record
    ref = rec.target if where == "target" else rec.prompt.images[0]
    return ref.member, ref


@dataclasses.dataclass
class RelabelSummary:
    output: str
    shards_copied: int
    shards_relabelled: int
    shards_skipped_done: int
    samples_changed: Counter
    samples_copied: int
    failures: int


def relabel(input_url: str, output_url: str, stages: list[str], cfg: PipelineConfig, only_stale: bool = False,
            progress: Callable[[int, int], None] | None = None) -> RelabelSummary:
    unknown = [s for s in stages if s not in RECIPES]
    if unknown:
        raise UserError(f"relabel --stages: {unknown[0]!r} cannot be relabelled yet; supported: "
                        f"{', '.join(RECIPES)} (caption and segment need `datagen run` with the new model)")
    src, dst = Location.parse(input_url), Location.parse(output_url)
    if src.url.rstrip("/") == dst.url.rstrip("/"):
        raise UserError("relabel --output must differ from --input: a relabel writes a new dataset version")
    manifest = read_manifest(src)
    if manifest.num_rows == 0:
        raise UserError(f"relabel --input {input_url!r} holds no manifest rows; point it at a datagen dataset")
    version = max(manifest.column("dataset_version").to_pylist()) + 1
    dst.makedirs()
    clean_partial_writes(dst)
    for rel in src.glob(f"{FAILURES_DIR}/*.parquet"):  # the new version keeps the record of old drops
        if not dst.exists(rel):
            dst.write_bytes(rel, src.read_bytes(rel))

    built: dict[str, Any] = {}
    stage_for = lambda name: built.setdefault(name, _build_stage(name, cfg))  # noqa: E731 - load once, lazily
    changed: Counter = Counter()
    copied = failures = n_copied_shards = n_relabelled = n_done = 0
    urls = shard_urls(src)
    for i, url in enumerate(urls):
        rel = "/".join(url.split("/")[-3:])
        task_name, name = rel.split("/")[1], posixpath.basename(rel)[: -len(".tar")]
        marker = f"{DONE_DIR}/{task_name}-{name}.json"
        if progress:
            progress(i, len(urls))
        if dst.exists(marker):
            n_done += 1
            continue
        for old in dst.glob(f"shards/{task_name}/{name}-*.tar"):  # a partial earlier attempt: redo it
            dst.remove(manifest_part_path(task_name, posixpath.basename(old)[: -len(".tar")]))
            dst.remove(old)
        todo = [s for s in stages if task_name in RECIPES[s]]
        if not todo:
            _copy_shard(src, dst, rel, task_name, name, version)
            n_copied_shards += 1
            dst.write_bytes(marker, b'{"copied": true}')
            continue
        samples = [to_sample(raw) for raw in raw_samples([url])]
        edits: dict[str, dict[str, Any]] = {s.key: {} for s in samples}
        for stage_name in todo:
            stage = stage_for(stage_name)
            new_prov = Provenance(**json.loads(stage.provenance))
            label_where, rgb_where = RECIPES[stage_name][task_name]
            need = [s for s in samples if not only_stale or
                    s.record.labels.get(stage_name, Provenance("")).fingerprint() != new_prov.fingerprint()]
            rows = []
            for s in need:
                m, ref = _members(s, rgb_where)
                rows.append({"key": s.key, C.IMAGE_A: s.media[m], C.IMAGE_B: s.media[m],
                             C.WIDTH: ref.width, C.HEIGHT: ref.height})
            out = stage(C.rows_to_batch(rows)) if rows else {}
            for row in C.batch_to_rows(out):
                if row.get(C.FAILED_STAGE) is not None:
                    failures += 1
                    edits[row["key"]]["failure"] = row
                else:
                    edits[row["key"]][stage_name] = (label_where, row[OUTPUT_COLUMN[stage_name]], new_prov)
        with DatasetWriter(dst, limits=ShardLimits(max_samples=10**9, max_bytes=2**62), prefix=f"{name}-",
                           dataset_version=version) as w:
            for s in samples:
                e = edits[s.key]
                stages_done = [k for k in e if k != "failure"]
                if not stages_done:
                    w.add(s)
                    copied += 1
                    continue
                previous = {k: s.record.labels[k] for k in stages_done if k in s.record.labels}
                for stage_name in stages_done:
                    label_where, data, prov = e[stage_name]
                    member, _ = _members(s, label_where)
                    s.media[member] = data
                    s.record.labels[stage_name] = prov
                    if stage_name == "depth":
                        s.record.prompt.context = context_prompt(task_name, s.record.facts, None, prov.model_id)
                    changed[stage_name] += 1
                w.add(s, changed_labels=stages_done, previous_labels=previous)
            for key, e in edits.items():
                if "failure" in e:
                    f = e["failure"]
                    w.add_failure(input_uri=input_url, key=key, stage=f[C.FAILED_STAGE],
                                  reason=f[C.FAILED_REASON], detail=f"kept the old label: {f[C.FAILED_DETAIL]}")
        n_relabelled += 1
        dst.write_bytes(marker, json.dumps({"stages": todo}).encode())
    old_stats = read_stats(src) or {}
    stats = compute_stats(dst, old_stats.get("stages"), {
        "smoke": old_stats.get("smoke", False) or cfg.smoke,
        "relabel": {"from": src.url, "stages": stages, "only_stale": only_stale, "dataset_version": version,
                    "samples_changed": dict(changed), "samples_copied": copied}})
    write_stats(dst, stats)
    write_card(dst, stats)
    return RelabelSummary(dst.url, n_copied_shards, n_relabelled, n_done, changed, copied, failures)


def _copy_shard(src: Location, dst: Location, rel: str, task_name: str, name: str, version: int) -> None:
    """A shard nothing in it changes: bytes copied, its manifest part re-versioned (written last)."""
    with src.open(rel) as fin, dst.atomic_write(rel) as fout:
        shutil.copyfileobj(fin, fout, 8 << 20)
    part = manifest_part_path(task_name, name)
    table = pq.read_table(src.open(part))
    table = table.set_column(table.schema.get_field_index("dataset_version"), "dataset_version",
                             pa.array([version] * table.num_rows, pa.int32()))
    write_parquet(dst, part, table)

