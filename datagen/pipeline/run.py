"""`datagen run`: build the Ray Data streaming pipeline and run it to a dataset directory.

ingest -> shots -> pairs -> caption -> segment -> depth -> edges -> assemble -> write.
CPU stages run as Ray tasks, model stages as actor pools that load their model once;
Ray Data's streaming executor applies backpressure, so memory stays bounded.
The same command, run again on the same output, resumes (see progress.py).
"""
from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import yaml

from datagen import UserError
from datagen.config import to_dict
from datagen.io.storage import Location
from datagen.io.tables import compute_stats, read_failures, write_stats
from datagen.pipeline.config import PipelineConfig
from datagen.pipeline.preflight import preflight_models
from datagen.pipeline.progress import ResumeState, clean_partial_writes, read_progress
from datagen.pipeline.sink import DatasetSink
from datagen.pipeline.sizing import plan_compute, resident
from datagen.pipeline.throughput import run_throughput
from schemas import columns as C
from schemas.members import pair_key
from stages.assemble import AssembleStage
from stages.base import Resources, Stage
from stages.caption import CaptionStage
from stages.depth import DepthStage
from stages.edges import EdgesStage
from stages.ingest import IngestStage, source_rows
from stages.pairs import PairsStage
from stages.segment import SegmentStage
from stages.shots import ShotsStage

MODEL_STAGES = {"caption": CaptionStage, "segment": SegmentStage, "depth": DepthStage, "edges": EdgesStage}
RUN_FILE, CONFIG_FILE = "run.json", "config.yaml"


@dataclass
class RunSummary:
    output: str
    stats: dict[str, Any]
    seconds: float
    resumed: bool


# --- CPU stages as Ray tasks: one stage object per worker process, built on first use ---
_STAGE_CACHE: dict[str, Stage] = {}


class VideoRegistry:
    """Ray actor: the first URI to claim a video id owns it. Copies of one file under other
    names have the same content id and would otherwise write the same sample keys twice."""

    def __init__(self):
        self.owner: dict[str, str] = {}

    def claim(self, pairs: list[tuple[str, str]]) -> list[str]:
        return [self.owner.setdefault(vid, uri) for vid, uri in pairs]


def _cpu_stage(batch, stage_cls: type[Stage], config: Any, resume: Any = None, registry: Any = None):
    key = f"{stage_cls.__module__}.{stage_cls.__qualname__}:{json.dumps(to_dict(config), sort_keys=True)}"
    stage = _STAGE_CACHE.get(key)
    if stage is None:
        stage = _STAGE_CACHE[key] = stage_cls(config)
    out = stage(batch)
    if stage_cls is IngestStage:
        if resume is not None:
            out = _drop_done_videos(out, resume)
        if registry is not None:
            _mark_duplicates(out, registry)
    if stage_cls is PairsStage:
        out = _stamp_pairs_and_drop_done(out, resume)
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


def _drop_done_videos(batch: dict[str, list], state: ResumeState) -> dict[str, list]:
    keep = [not state.is_video_done(vid, uri) for vid, uri in zip(batch[C.VIDEO_ID], batch[C.VIDEO_URI])]
    return _keep(batch, keep)


def _stamp_pairs_and_drop_done(batch: dict[str, list], state: ResumeState | None) -> dict[str, list]:
    """Record how many pairs each video yielded (its batch holds all of them): resume
    knows a video is finished when that many pairs are done."""
    healthy = [f is None for f in batch[C.FAILED_STAGE]]
    per_video = Counter(v for v, h in zip(batch[C.VIDEO_ID], healthy) if h)
    batch["pairs_in_video"] = [per_video.get(v, 0) for v in batch[C.VIDEO_ID]]
    if state is None or not state.done_pairs:
        return batch
    keep = [not (h and pair_key(v, s, p) in state.done_pairs)
            for v, s, p, h in zip(batch[C.VIDEO_ID], batch[C.SHOT], batch[C.PAIR], healthy)]
    return _keep(batch, keep)


def _map_kwargs(res: Resources) -> dict[str, Any]:
    kw: dict[str, Any] = {"batch_size": res.batch_size, "num_cpus": res.num_cpus, "batch_format": "pyarrow"}
    if res.num_gpus:
        kw["num_gpus"] = res.num_gpus
    return kw


def build_dataset(cfg: PipelineConfig, sources: list[dict], state: ResumeState):
    import ray

    registry = ray.remote(num_cpus=0)(VideoRegistry).remote()
    compute = plan_compute(cfg, ray.cluster_resources())
    ds = ray.data.from_items(sources, override_num_blocks=max(1, min(len(sources), 4096)))
    for stage_cls, section in ((IngestStage, cfg.ingest), (ShotsStage, cfg.shots), (PairsStage, cfg.pairs)):
        res = section.resources
        extra = {"resume": state, "registry": registry} if stage_cls is IngestStage else {"resume": state}
        ds = ds.map_batches(_cpu_stage, fn_kwargs={"stage_cls": stage_cls, "config": section, **extra},
                            compute=compute[stage_cls.name].ray_strategy(), **_map_kwargs(res))
    for name in cfg.labels:
        section = getattr(cfg, name)
        res = section.resources
        ds = ds.map_batches(MODEL_STAGES[name], fn_constructor_kwargs={"config": section},
                            compute=compute[name].ray_strategy(), **_map_kwargs(res))
    res = cfg.assemble.resources
    ds = ds.map_batches(_cpu_stage, fn_kwargs={"stage_cls": AssembleStage, "config": cfg.assemble},
                        compute=compute["assemble"].ray_strategy(), **_map_kwargs(res))
    return ds


def init_ray(cfg: PipelineConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if not address:
        kwargs.update(num_cpus=cfg.ray.num_cpus, object_store_memory=cfg.ray.object_store_memory_bytes)
    # "local" starts a fresh instance: a bare ray.init() would join any cluster this machine
    # ran before (even a dead one), which is never what a run without an address wants.
    ray.init(address=address or "local", **{k: v for k, v in kwargs.items() if v is not None})
    check_actor_resources(cfg, ray.cluster_resources(), local=not address)


def check_actor_resources(cfg: PipelineConfig, cluster: dict[str, float], local: bool) -> None:
    """Model stages hold their actors for the whole run: if the actors alone fill the
    cluster, the CPU stages never get a slot and the run waits forever. Refuse that on a
    fixed local machine; an autoscaling cluster may still grow, so there it only warns."""
    for unit in ("CPU", "GPU"):
        key = "num_cpus" if unit == "CPU" else "num_gpus"
        need = sum(resident(getattr(cfg, s).resources, unit) for s in cfg.labels)
        have = float(cluster.get(unit, 0.0))
        stuck = need > have if unit == "GPU" else need >= have
        if need and stuck:
            msg = (f"the model stages' actors need {need:g} {unit} ({', '.join(cfg.labels)}: resources.{key} x "
                   f"min_concurrency) but the Ray cluster has {have:g}{', leaving none for the CPU stages' if unit == 'CPU' else ''}; "
                   f"lower <stage>.resources.{key} or min_concurrency (e.g. --set depth.resources.{key}=0.25)"
                   + (" or use a CPU profile (--config cpu)" if unit == "GPU" else ""))
            if local:
                raise UserError(msg)
            import warnings

            warnings.warn(msg + " (waiting for the cluster to scale up)", stacklevel=2)


def check_run_config(loc: Location, cfg: PipelineConfig) -> tuple[dict, bool]:
    """Snapshot the resolved config; a resumed run must produce the same samples."""
    fp = cfg.output_fingerprint()
    run = json.loads(loc.read_bytes(RUN_FILE)) if loc.exists(RUN_FILE) else None
    if run and run["fingerprint"] != fp:
        raise UserError(f"{loc.url} was written with a different config (fingerprint {run['fingerprint']}, now {fp}); "
                        f"resume with the same config (see {loc.url}/{CONFIG_FILE}) or choose a new --output")
    resumed = run is not None
    run = run or {"fingerprint": fp, "attempts": 0}
    run["attempts"] += 1
    loc.makedirs()
    loc.write_bytes(CONFIG_FILE, yaml.safe_dump(to_dict(cfg), sort_keys=False).encode())
    loc.write_bytes(RUN_FILE, json.dumps(run, indent=2).encode())
    return run, resumed


def stage_yields(loc: Location, videos_in: int, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Rows in/out per stage, derived from the progress and failures tables (survives resumes)."""
    progress = read_progress(loc).select(["pair_key"]).to_pydict()["pair_key"]
    failures = Counter(read_failures(loc).select(["stage"]).to_pydict()["stage"])
    pairs = sum(1 for k in progress if k)
    videos_failed = sum(failures[s] for s in ("ingest", "shots", "pairs"))
    out: dict[str, dict[str, Any]] = {
        "ingest+shots+pairs": {"in": videos_in, "out": videos_in - videos_failed, "pairs": pairs}}
    n = pairs
    for stage in labels:
        out[stage] = {"in": n, "out": n - failures[stage]}
        n -= failures[stage]
    out["assemble"] = {"in": n}  # pairs in; its drops are per sample (failures table), its output is samples
    return out


def run_pipeline(cfg: PipelineConfig, inputs: list[str], output: str, *, console=None) -> RunSummary:
    import ray

    t0 = time.time()
    loc = Location.parse(output)
    sources = source_rows(inputs)
    pinned = preflight_models(cfg)  # before anything is written or started: a bad model path is one line
    run, resumed = check_run_config(loc, cfg)
    removed = clean_partial_writes(loc)
    state = ResumeState.load(loc)
    if console:
        what = f"resuming (attempt {run['attempts']}): {len(state.done_pairs)} pairs and " \
               f"{state.samples_committed} samples already committed, {len(removed)} partial files removed" \
            if resumed else "new run"
        console.print(f"datagen run: {len(sources)} videos -> {loc.url} ({what})", highlight=False)
    init_ray(cfg)
    ds = build_dataset(pinned, sources, state)
    sink = DatasetSink(output, cfg.write.limits, frozenset(state.committed_keys), cfg.write.min_rows_per_write,
                       attempt=f"{run['attempts']:03d}{uuid.uuid4().hex[:4]}")
    ds.write_datasink(sink)
    stats = compute_stats(loc, stage_yields(loc, len(sources), cfg.labels),
                          {"smoke": cfg.smoke, "config_fingerprint": run["fingerprint"], "attempts": run["attempts"],
                           "throughput": run_throughput(ds, pinned)})
    write_stats(loc, stats)
    return RunSummary(loc.url, stats, time.time() - t0, resumed)
