"""Per-stage rows/s, busy share of its workers, and the stage that limited the run.

Read from Ray Data's own execution stats (one entry per physical operator: rows out,
first start to last finish, summed task wall time). Ray fuses neighbouring task stages
into one operator (ingest, shots and pairs usually run as one), which then reports as
one row named `ingest+shots+pairs`. Busy share = task seconds / (span x workers the plan
allows): near 1 the stage's workers never waited, so it is the one that limited the run;
low, it waited for input or had more workers than work.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping


@dataclass
class OperatorTimes:
    name: str  # Ray's operator name, e.g. "MapBatches(cpu_stage)->MapBatches(cpu_stage)"
    rows_out: int
    span_s: float  # first task start to last task finish
    task_s: float  # sum of the operator's task wall times


@dataclass
class StageThroughput:
    stage: str
    rows_out: int
    rows_per_s: float
    busy_share: float
    workers: int


def operator_times(summary: Any) -> list[OperatorTimes]:
    """Ray's DatasetStatsSummary (Dataset.get_stats_summary(), parents first) as plain records."""
    ops: list[OperatorTimes] = []
    for parent in summary.parents:
        ops += operator_times(parent)
    for op in summary.operators_stats:
        ops.append(OperatorTimes(op.operator_name, int(op.output_num_rows.sum) if op.output_num_rows else 0,
                                 float(op.time_total_s or 0.0), float(op.wall_time.sum) if op.wall_time else 0.0))
    return ops


def stage_throughput(ops: list[OperatorTimes], stages: list[str], workers: Mapping[str, int]) -> dict[str, Any]:
    """{"stages": [StageThroughput as dicts, pipeline order], "limiting": stage name or None}.

    `stages` is the order of the pipeline's map stages (their operators are all named
    MapBatches(...)); the reading and writing operators keep their own names."""
    queue = list(stages)
    rows = []
    for op in ops:
        parts = op.name.split("->")
        maps = sum(p.startswith("MapBatches(") for p in parts)
        names = [queue.pop(0) for _ in range(min(maps, len(queue)))]
        if not names:
            low = op.name.lower()
            if op.name in ("Input", "FromItems") or low.startswith("read") or "repartition" in low:
                continue  # listing the sources and re-blocking them: no stage's work, never what limits a run
            names = [low]
        n = max(1, int(workers.get(names[0], 1)))
        busy = op.task_s / (op.span_s * n) if op.span_s > 0 else 0.0
        rows.append(StageThroughput("+".join(names), op.rows_out, op.rows_out / op.span_s if op.span_s > 0 else 0.0,
                                    min(1.0, busy), n))
    # the busiest stage; among equally busy ones (single actors are busy all along), the slowest. Not the
    # write: its one streaming operator is busy for the whole run whatever limits it, and its rows are tasks
    stages_only = [r for r in rows if r.stage != "write"] or rows
    limiting = max(stages_only, key=lambda r: (round(r.busy_share, 2), -r.rows_per_s)).stage if rows else None
    return {"stages": [asdict(r) for r in rows], "limiting": limiting}


def add_throughput_table(throughput: dict[str, Any] | None, console: Any) -> None:
    """The run summary's per-stage table (datagen/pipeline/report.py calls this)."""
    if not throughput or not throughput.get("stages"):
        return
    from rich.table import Table

    t = Table(title=f"stage throughput (limited by {throughput['limiting']})")
    for c in ("stage", "rows out", "rows/s", "busy share", "workers"):
        t.add_column(c, justify="left" if c == "stage" else "right")
    for s in throughput["stages"]:
        mark = " <" if s["stage"] == throughput["limiting"] else ""
        t.add_row(s["stage"] + mark, str(s["rows_out"]), f"{s['rows_per_s']:.2f}", f"{s['busy_share']:.2f}", str(s["workers"]))
    console.print(t)


def run_throughput(ds: Any, cfg: Any) -> dict[str, Any]:
    """The table for a finished run of `ds`, built by datagen.pipeline.run from `cfg`."""
    import ray

    from datagen.pipeline.sizing import CPU_STAGES, plan_compute

    plan = plan_compute(cfg, ray.cluster_resources())
    shots = ["shots", "transnet"] if cfg.shots.detector == "transnetv2" else ["shots"]  # as run.build_dataset maps them
    order = [CPU_STAGES[0], *shots, CPU_STAGES[2], *cfg.model_stages, CPU_STAGES[3]]
    return stage_throughput(operator_times(ds.get_stats_summary()), order, {k: v.slots for k, v in plan.items()})
