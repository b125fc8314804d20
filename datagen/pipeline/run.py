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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml

from datagen import UserError, task_shares
from datagen.config import to_dict
from datagen.io.compact import TABLES, compact_dataset, finish_pending
from datagen.io.storage import Location
from datagen.io.tables import compute_stats, write_stats
from datagen.pipeline.config import PipelineConfig
from datagen.pipeline.commit import clean_partial_writes, start_write_claims
from datagen.pipeline.outcome import run_outcome, standing_failures
from datagen.pipeline.progress import ResumeClient, ResumeState, read_progress
from datagen.io.card import write_card
from datagen.pipeline.progress_log import quiet_third_party_output, report_progress
from datagen.pipeline.actors import actor_class
from datagen.pipeline.costs import CostLedger, reporting, summarize
from datagen.pipeline.cpu_tasks import VideoRegistry, cpu_stage
from datagen.pipeline.sink import DatasetSink
from datagen.redact import redact
from datagen.video.sources import check_sources
from datagen.pipeline.stopped import why_run_stopped
from datagen.pipeline.preflight import preflight_models
from datagen.pipeline.sizing import StageCompute, plan_compute, resident
from datagen.pipeline.throughput import run_throughput
from schemas.reasons import PERMANENT, REASONS
from stages.assemble import AssembleStage
from stages.base import Resources
from stages.caption import CaptionStage
from stages.depth import DepthStage
from stages.edges import EdgesStage
from stages.ingest import IngestStage, source_dataset
from stages.pairs import PairsStage
from stages.safety import SafetyStage
from stages.segment import SegmentStage
from stages.shots import ShotsStage
from stages.text import TextStage
from stages.transnet import TransNetStage
from stages.verify import VerifyStage

MODEL_STAGES = {"text": TextStage, "safety": SafetyStage, "caption": CaptionStage, "verify": VerifyStage,
                "segment": SegmentStage, "depth": DepthStage, "edges": EdgesStage}
RUN_FILE, CONFIG_FILE = "run.json", "config.yaml"


@dataclass
class RunSummary:
    output: str
    stats: dict[str, Any]
    seconds: float
    resumed: bool


def _map_kwargs(res: Resources, rows: int | None = None) -> dict[str, Any]:
    """map_batches' arguments for a stage of `res` (`rows`: of one task, default one batch)."""
    kw: dict[str, Any] = {"batch_size": rows or res.batch_size, "num_cpus": res.num_cpus, "batch_format": "pyarrow"}
    if res.num_gpus:
        kw["num_gpus"] = res.num_gpus
    return kw


def model_map_args(stage_cls: type, res: Resources, pool: StageCompute) -> dict[str, Any]:
    """map_batches' arguments for a model stage's actor pool: a task carries the pool's
    `batches_per_task` batches, and the actor class runs them one call each (actor_class)."""
    return {"fn": actor_class(stage_cls, res.batch_size), "compute": pool.ray_strategy(),
            **_map_kwargs(res, pool.task_rows(res.batch_size))}


def build_dataset(cfg: PipelineConfig, sources, resume: ResumeState | ResumeClient | None, registry: Any,
                  ledger: Any = None):
    """The pipeline over `sources` (a Ray Dataset of source rows, see stages.ingest.source_dataset);
    `registry` is a VideoRegistry actor; `ledger`, when given, adds up each stage's CPU and GPU seconds."""
    import ray

    compute = plan_compute(cfg, ray.cluster_resources())
    ds = sources
    for stage_cls, section in ((IngestStage, cfg.ingest), (ShotsStage, cfg.shots), (PairsStage, cfg.pairs)):
        if stage_cls is PairsStage and cfg.shots.detector == "transnetv2":  # the shot network: a model stage
            res = cfg.shots.transnet_resources
            pool = StageCompute.actor_pool(res, res.concurrency, res.concurrency)
            ds = ds.map_batches(fn_constructor_kwargs={"config": cfg.shots}, **model_map_args(TransNetStage, res, pool))
        res = section.resources
        extra = {"resume": resume, "registry": registry} if stage_cls is IngestStage else {"resume": resume}
        extra["ledger"] = ledger
        ds = ds.map_batches(cpu_stage, fn_kwargs={"stage_cls": stage_cls, "config": section, **extra},
                            compute=compute[stage_cls.name].ray_strategy(), **_map_kwargs(res))
    for name in cfg.model_stages:
        section = cfg.section(name)
        res = section.resources
        stage_cls = reporting(MODEL_STAGES[name], ledger, res.num_gpus) if ledger is not None else MODEL_STAGES[name]
        ds = ds.map_batches(fn_constructor_kwargs={"config": section}, max_restarts=cfg.ray.max_actor_restarts,
                            **model_map_args(stage_cls, res, compute[name]))
    res = cfg.assemble.resources
    ds = ds.map_batches(cpu_stage, fn_kwargs={"stage_cls": AssembleStage, "config": cfg.assemble, "ledger": ledger},
                        compute=compute["assemble"].ray_strategy(), **_map_kwargs(res))
    return ds


def init_ray(cfg: PipelineConfig, verbose: bool = True) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    # workers' own output (and their tracebacks) stays in the session's log files unless --verbose
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose,
                              "logging_level": "info" if verbose else "error"}
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
        need = sum(resident(cfg.section(s).resources, unit) for s in cfg.model_stages)
        have = float(cluster.get(unit, 0.0))
        stuck = need > have if unit == "GPU" else need >= have
        if need and stuck:
            msg = (f"the model stages' actors need {need:g} {unit} ({', '.join(cfg.model_stages)}: resources.{key} x "
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
    # the write prefixes of this attempt start with its id: only these are ever rolled back
    run["attempt"] = f"{run['attempts']:03d}{uuid.uuid4().hex[:4]}"
    run["attempt_ids"] = [*run.get("attempt_ids", []), run["attempt"]]
    loc.makedirs()
    loc.write_bytes(CONFIG_FILE, yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False).encode())
    loc.write_bytes(RUN_FILE, json.dumps(run, indent=2).encode())
    return run, resumed


def stage_yields(loc: Location, videos_in: int, labels: list[str],
                 standing: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows in/out per stage, derived from the progress table and the failures that still stand
    (outcome.standing_failures): survives resumes, and a pair a rerun fixed is not a drop."""
    progress = read_progress(loc).select(["pair_key", "video_uri"]).to_pydict()
    failures = Counter(f["stage"] for f in standing)
    pairs = sum(1 for k in progress["pair_key"] if k)
    # a video failed when nothing of it made a pair: a long video's window that failed does not fail its file
    with_pairs = {u for k, u in zip(progress["pair_key"], progress["video_uri"]) if k}
    videos_failed = len({f["input_uri"] for f in standing
                         if f["stage"] in ("ingest", "shots", "pairs") and f["input_uri"] not in with_pairs})
    out: dict[str, dict[str, Any]] = {
        "ingest+shots+pairs": {"in": videos_in, "out": videos_in - videos_failed, "pairs": pairs}}
    n = pairs
    for stage in labels:
        out[stage] = {"in": n, "out": n - failures[stage]}
        n -= failures[stage]
    # pairs in; its drops are per sample (failures table), its output is samples
    out["assemble"] = {"in": n, "pairs_survival": round(n / pairs, 4) if pairs else None}
    return out


def permanent_reasons(names: list[str]) -> frozenset[str]:
    """`--retry-failed` values: declared permanent reasons (transient ones are retried anyway)."""
    for name in names:
        if REASONS.get(name) != PERMANENT:
            why = "is transient: every run retries those" if name in REASONS else "is not a failure reason"
            raise UserError(f"--retry-failed {name!r} {why}; permanent reasons: "
                            f"{', '.join(r for r, k in REASONS.items() if k == PERMANENT)}")
    return frozenset(names)


@contextmanager
def actor_start_bound(timeout_s: float):
    """Ray Data waits at most `timeout_s` for an operator's actors to start, for the Datasets made
    inside (each snapshots the process's DataContext when made); the process's value after, for the
    Datasets of whatever runs next in this process."""
    import ray

    ctx = ray.data.DataContext.get_current()
    waited, ctx.wait_for_min_actors_s = ctx.wait_for_min_actors_s, timeout_s
    try:
        yield
    finally:
        ctx.wait_for_min_actors_s = waited


def end_helpers(handles: list[Any]) -> None:
    """A job's helper actors (run state, claims, costs) end with it. Something in Ray Data keeps
    their handles alive after the job, so a driver that runs again (a notebook, a bench, the tests)
    kept every earlier run's, each a worker process."""
    import ray

    for h in handles:
        ray.kill(h)


def run_pipeline(cfg: PipelineConfig, inputs: list[str], output: str, *, console=None,
                 retry_failed: list[str] = (), verbose: bool = True) -> RunSummary:
    t0 = time.time()
    reopen = permanent_reasons(list(retry_failed))
    loc = Location.parse(output)
    opts = cfg.ingest.storage_options
    sources = check_sources([inputs] if isinstance(inputs, str) else inputs, opts)  # an input error comes first
    pinned = preflight_models(cfg)  # before anything is written or started: a bad model path is one line
    run, resumed = check_run_config(loc, cfg)
    for folder in TABLES:  # a compaction killed in the last run is finished before anything reads
        finish_pending(loc, folder)
    removed = clean_partial_writes(loc, run["attempt_ids"])
    quiet_third_party_output(verbose)
    init_ray(cfg, verbose)
    import ray

    with actor_start_bound(cfg.ray.actor_start_timeout_s):  # no wait forever; the process default after
        listing = source_dataset(sources, cfg.ingest.resources.batch_size, **opts)
        ledger = ray.remote(num_cpus=0)(CostLedger).remote()
        registry = ray.remote(num_cpus=0)(VideoRegistry).remote()
        ds = build_dataset(pinned, listing, resume := ResumeClient.start(output, reopen), registry, ledger)
        if console:
            done = resume.summary()
            what = f"resuming (attempt {run['attempts']}): {done['pairs_done']} pairs and " \
                   f"{done['samples_committed']} samples already committed, {len(removed)} partial files removed" \
                if resumed else "new run"
            console.print(f"datagen run: {len(sources)} source(s) -> {loc.url} ({what})", highlight=False)
        sink = DatasetSink(output, cfg.write.limits, cfg.write.min_rows_per_write,
                           attempt=run["attempt"],
                           storage_retries=cfg.write.storage_retries, storage_backoff_s=cfg.write.storage_backoff_s,
                           claims=start_write_claims())
        helpers = [ledger, registry, resume.handle, sink.claims.handle]
        say = console and (lambda line: console.print(line, highlight=False))
        try:
            with report_progress(loc, lambda: resume.summary()["videos_listed"], say=say):
                ds.write_datasink(sink)
        except Exception as e:
            end_helpers(helpers)
            failure = why_run_stopped(e, cfg, {cls.__name__: stage for stage, cls in MODEL_STAGES.items()})
            if failure is None:
                raise
            raise failure from None  # its one-line message, not Ray's traceback
    videos_in = resume.summary()["videos_listed"]
    totals = ray.get(ledger.totals.remote())
    end_helpers(helpers)
    compact_dataset(loc)
    gpus_held = sum(resident(cfg.section(s).resources, "GPU") for s in cfg.model_stages)
    cost = summarize(totals, sink.totals["samples"], time.time() - t0, gpus_held)
    shares = {"task_shares": task_shares.dataset_report(loc, cfg.assemble.task_shares)} if cfg.assemble.task_shares else {}
    standing = standing_failures(loc)
    stats = compute_stats(loc, stage_yields(loc, videos_in, cfg.model_stages, standing),
                          {"smoke": cfg.smoke, "config_fingerprint": run["fingerprint"], "attempts": run["attempts"],
                           "outcome": run_outcome(loc), "cost": cost, "throughput": run_throughput(ds, pinned), **shares},
                          failures=standing)
    write_stats(loc, stats)
    write_card(loc, stats)
    return RunSummary(loc.url, stats, time.time() - t0, resumed)
