"""`datagen relabel`: re-run labelling stages on a dataset's pair store into a new dataset version.

A Ray Data job, built like `datagen run` from the same stage classes and actor pools:
pair-store tars -> pair rows -> each labelling stage of the plan (the requested ones and
those that read them, schemas/labels.py) -> assemble, for the tasks those labels feed ->
the same sink and commit protocol. No video is decoded. Media the re-run labels do not
feed are passed through as stored (not re-encoded); shards of tasks the labels do not
feed are copied byte for byte. Killed at any point, the same command finishes the job.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from datagen import UserError
from datagen.config import apply_overrides, from_dict, load_yaml, to_dict
from datagen.io.pair_store import changes as read_changes
from datagen.io.pair_store import decode_pair, has_pair_store, iter_pairs, read_chunks, read_pair_index
from datagen.io.card import write_card
from datagen.io.shards import FAILURES_DIR, SHARDS_DIR, manifest_part_path, write_parquet
from datagen.io.storage import Location
from datagen.io.tables import compute_stats, read_manifest, read_stats, write_stats
from datagen.pipeline.cpu_tasks import cpu_stage
from datagen.pipeline.commit import (clean_partial_writes, committed_prefixes, start_write_claims, write_commit_record,
                                     write_prefix)
from datagen.pipeline.config import PipelineConfig
from datagen.pipeline.outcome import run_outcome
from datagen.pipeline.progress import ResumeState, read_progress
from datagen.pipeline.relabel_steps import RelabelStep, load_pairs
from datagen.pipeline.run import (CONFIG_FILE, MODEL_STAGES, RUN_FILE, _map_kwargs, actor_start_bound, end_helpers,
                                  init_ray, model_map_args)
from datagen.pipeline.sink import DatasetSink
from datagen.pipeline.sizing import plan_compute
from schemas.labels import LABEL_STAGES, relabel_plan, tasks_depending_on
from schemas.tables import MANIFEST_SCHEMA
from stages.assemble import AssembleStage

COPY_ATTEMPT = "copy"  # write prefix of the shards copied unchanged: one commit record for all of them


@dataclass
class RelabelSummary:
    output: str
    requested: list[str]
    plan: list[str]  # requested stages and the stages that read them (re-run only where their input changed)
    tasks_rebuilt: list[str]
    shards_copied: int
    pairs: int  # pairs in the pair store
    samples_changed: Counter  # stage -> samples whose label of that stage was re-run
    changes: dict[str, int]  # keys added / removed / changed against the source version
    failures: int  # failure rows this re-label wrote
    resumed: bool
    stats: dict[str, Any]
    seconds: float


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dataset_config(dataset: str, config: str | Path | None = None, overrides: list[str] = ()) -> PipelineConfig:
    """The config a dataset was made with (its config.yaml), a YAML file laid over it, then `--set`."""
    loc = Location.parse(dataset)
    if not loc.exists(CONFIG_FILE):
        raise UserError(f"{loc.url} has no {CONFIG_FILE} (not written by `datagen run`?); pass the config it was "
                        f"made with as --config")
    data = yaml.safe_load(loc.read_bytes(CONFIG_FILE)) or {}
    if config is not None:
        data = _merge(data, load_yaml(config))
    return from_dict(PipelineConfig, apply_overrides(data, list(overrides)))


def _check(src: Location, dst: Location, stages: list[str], cfg: PipelineConfig) -> int:
    """The source version's number, after every check a user can fail."""
    unknown = [s for s in stages if s not in LABEL_STAGES]
    if unknown or not stages:
        raise UserError(f"relabel --stages: {unknown[0] if unknown else ''!r} is not a labelling stage; "
                        f"choose from {', '.join(LABEL_STAGES)}")
    absent = [s for s in stages if s not in cfg.labels]
    if absent:
        raise UserError(f"relabel --stages {absent[0]}: the dataset was made without that stage (config labels: "
                        f"{', '.join(cfg.labels)}); make a new dataset with `datagen run` instead")
    if src.url.rstrip("/") == dst.url.rstrip("/"):
        raise UserError("relabel --output must differ from --input: a relabel writes a new dataset version")
    manifest = read_manifest(src)
    if manifest.num_rows == 0:
        raise UserError(f"relabel --input {src.url!r} holds no manifest rows; point it at a datagen dataset")
    if not has_pair_store(src):
        raise UserError(f"relabel --input {src.url!r} has no pair store (pairs/): it was written before datagen "
                        f"kept each pair's frames and labels, so {', '.join(stages)} cannot re-run without decoding "
                        f"the videos again; make a new dataset from the videos with `datagen run`")
    first = read_pair_index(src).column("shard")[0].as_py()
    decode_pair(next(iter_pairs(src, first)))  # an unreadable pair-store version fails here, in one line
    return max(manifest.column("dataset_version").to_pylist())


def _check_resume(dst: Location, cfg: PipelineConfig, src: Location, stages: list[str], only_stale: bool) -> tuple[dict, bool]:
    """A resumed re-label must be the same job; snapshot the config the new version was made with."""
    what = {"from": src.url, "stages": sorted(stages), "only_stale": only_stale, "config": cfg.output_fingerprint()}
    fp = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]
    run = json.loads(dst.read_bytes(RUN_FILE)) if dst.exists(RUN_FILE) else None
    if run and run["fingerprint"] != fp:
        raise UserError(f"{dst.url} holds another job's output (fingerprint {run['fingerprint']}, now {fp}); rerun "
                        f"the same relabel command to resume it, or choose a new --output")
    resumed = run is not None
    run = run or {"fingerprint": fp, "attempts": 0, "relabel": what, "attempt_ids": [COPY_ATTEMPT]}
    run["attempts"] += 1
    # the write prefixes of this attempt start with its id: only these are ever rolled back
    run["attempt"] = f"{run['attempts']:03d}{uuid.uuid4().hex[:4]}"
    run["attempt_ids"] = [*run["attempt_ids"], run["attempt"]]
    dst.makedirs()
    dst.write_bytes(CONFIG_FILE, yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())
    dst.write_bytes(RUN_FILE, json.dumps(run, indent=2).encode())
    return run, resumed


def copy_unchanged(src: Location, dst: Location, tasks: list[str], version: int) -> int:
    """Shards of `tasks` (none of their labels re-run) copied byte for byte under one new write
    prefix, their manifest rows re-versioned, with the source's failure record; one commit
    record makes them count. Done once: a resumed re-label finds the committed prefix."""
    if any(p.startswith(f"{COPY_ATTEMPT}-") for p in committed_prefixes(dst)):
        return 0
    prefix = write_prefix(COPY_ATTEMPT, 0)
    manifest = read_manifest(src)
    rows_by_shard: dict[str, list[dict]] = {}
    for row in manifest.filter(pa.compute.is_in(manifest["task"], pa.array(tasks))).to_pylist():
        rows_by_shard.setdefault(row["shard"], []).append(row)
    per_task: Counter = Counter()
    for shard, rows in sorted(rows_by_shard.items()):
        task = rows[0]["task"]
        name = f"{prefix}{per_task[task]:06d}"
        per_task[task] += 1
        rel = f"{SHARDS_DIR}/{task}/{name}.tar"
        with src.open(shard) as fin, dst.atomic_write(rel) as fout:
            while chunk := fin.read(8 << 20):
                fout.write(chunk)
        for r in rows:
            r.update(shard=rel, dataset_version=version)
        write_parquet(dst, manifest_part_path(task, name), pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA))
    for i, rel in enumerate(src.glob(f"{FAILURES_DIR}/*.parquet")):  # the new version keeps the old drops
        dst.write_bytes(f"{FAILURES_DIR}/{prefix}{uuid.uuid4().hex[:16]}.parquet", src.read_bytes(rel))
    write_commit_record(dst, prefix, [])
    return len(rows_by_shard)


def build_relabel_dataset(cfg: PipelineConfig, src: Location, requested: list[str], plan: list[str],
                          tasks: list[str], only_stale: bool, done_pairs: frozenset[str]):
    import ray

    # one input row per byte range of the first stage's batch of pairs: tasks stream the store in parallel
    chunks = read_chunks(src, cfg.section(plan[0]).resources.batch_size)
    ds = ray.data.from_items(chunks, override_num_blocks=max(1, min(len(chunks), 4096)))
    compute = plan_compute(cfg, ray.cluster_resources())  # the same pools as `datagen run`
    res = cfg.assemble.resources
    ds = ds.map_batches(load_pairs, fn_kwargs={"src_url": src.url, "tasks": tasks, "done_pairs": done_pairs},
                        compute=compute["assemble"].ray_strategy(), batch_size=1, num_cpus=res.num_cpus,
                        batch_format="pyarrow")
    for name in plan:
        section = cfg.section(name)
        kwargs = {"stage_cls": MODEL_STAGES[name], "config": section, "requested": name in requested,
                  "only_stale": only_stale}
        ds = ds.map_batches(fn_constructor_kwargs=kwargs, max_restarts=cfg.ray.max_actor_restarts,
                            **model_map_args(RelabelStep, section.resources, compute[name]))
    assemble = dataclasses.replace(cfg.assemble, tasks={t: r for t, r in cfg.assemble.tasks.items() if t in tasks})
    ds = ds.map_batches(cpu_stage, fn_kwargs={"stage_cls": AssembleStage, "config": assemble},
                        compute=compute["assemble"].ray_strategy(), **_map_kwargs(res))
    return ds


def relabel(input_url: str, output_url: str, stages: list[str], cfg: PipelineConfig, only_stale: bool = False,
            console=None) -> RelabelSummary:
    t0 = time.time()
    src, dst = Location.parse(input_url), Location.parse(output_url)
    source_version = _check(src, dst, stages, cfg)
    version = source_version + 1
    plan = [s for s in relabel_plan(stages) if s in cfg.labels]  # a dataset made without a stage (verify) never runs it
    rebuilt = [t for t in tasks_depending_on(plan) if cfg.assemble.tasks.get(t, 0) > 0]
    unchanged = [t for t in cfg.assemble.tasks if t not in rebuilt]
    run, resumed = _check_resume(dst, cfg, src, stages, only_stale)
    removed = clean_partial_writes(dst, run["attempt_ids"])
    state = ResumeState.load(dst)
    index = read_pair_index(src).select(["pair_key", "shard"]).to_pydict()
    if console:
        cascade = [s for s in plan if s not in stages]
        console.print(f"datagen relabel: {', '.join(stages)}"
                      + (f" (and {', '.join(cascade)} where its input changes)" if cascade else "")
                      + f" on {len(index['pair_key'])} pairs of {src.url} (version {source_version}) -> {dst.url} "
                      f"(version {version}); rebuilds {', '.join(rebuilt)}; copies {', '.join(unchanged) or 'nothing'}"
                      + (f"; resuming (attempt {run['attempts']}): {len(state.done_pairs)} pairs done, "
                         f"{len(removed)} partial files removed" if resumed else ""), highlight=False)
    copied = copy_unchanged(src, dst, unchanged, version)
    init_ray(cfg)
    with actor_start_bound(cfg.ray.actor_start_timeout_s):  # a model that never loads ends the job
        ds = build_relabel_dataset(cfg, src, stages, plan, rebuilt, only_stale, frozenset(state.done_pairs))
        sink = DatasetSink(dst.url, cfg.write.limits, cfg.write.min_rows_per_write,
                           attempt=run["attempt"], storage_retries=cfg.write.storage_retries,
                           storage_backoff_s=cfg.write.storage_backoff_s, dataset_version=version,
                           claims=start_write_claims())
        try:
            ds.write_datasink(sink)
        finally:
            end_helpers([sink.claims.handle])
    clean_partial_writes(dst, run["attempt_ids"])  # attempts of write tasks Ray retried
    manifest = read_manifest(dst).select(["changed_labels"]).to_pydict()["changed_labels"]
    changed = Counter(s for labels in manifest for s in labels)
    delta = read_changes(dst)
    failures = sum(sink.totals.get(k, 0) for k in ("failures",))
    old_stats = read_stats(src) or {}
    relabel_info = {"from": src.url, "from_version": source_version, "dataset_version": version,
                    "stages": stages, "plan": plan, "only_stale": only_stale, "tasks_rebuilt": rebuilt,
                    "samples_changed": dict(changed), "keys": {k: len(v) for k, v in delta.items()}}
    stats = compute_stats(dst, relabel_yields(dst, len(index["pair_key"]), plan),
                          {"smoke": old_stats.get("smoke", False) or cfg.smoke, "relabel": relabel_info,
                           "attempts": run["attempts"], "outcome": run_outcome(dst)})
    write_stats(dst, stats)
    write_card(dst, stats)
    return RelabelSummary(dst.url, stages, plan, rebuilt, copied, len(index["pair_key"]), changed,
                          relabel_info["keys"], failures, resumed, stats, time.time() - t0)


def relabel_yields(dst: Location, pairs_in: int, plan: list[str]) -> dict[str, dict[str, Any]]:
    """The stage-yield table of `datagen run`, for a re-label: pairs in from the pair store, out per stage
    (failures this re-label wrote: a pair that failed for good kept its old label)."""
    parts = [p for p in dst.glob(f"{FAILURES_DIR}/*.parquet") if not posixpath.basename(p).startswith(f"{COPY_ATTEMPT}-")]
    failures = Counter(s for p in parts for s in pq.read_table(dst.open(p), columns=["stage"]).column("stage").to_pylist())
    done = sum(1 for k in read_progress(dst).column("pair_key").to_pylist() if k)
    out: dict[str, dict[str, Any]] = {"pair store": {"in": pairs_in, "out": done}}
    for stage in plan:
        out[stage] = {"in": pairs_in, "out": pairs_in - failures[stage]}
    out["assemble"] = {"in": done}
    return out
