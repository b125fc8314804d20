"""What a run cost: CPU- and GPU-seconds per stage from the stages' own timers, and per accepted sample.

Every stage times its batches (`Stage.last_cost`: CPU-seconds of its process, wall
seconds); the runner adds each batch to one `CostLedger` actor. GPU-seconds are a
stage's busy wall time times the GPU share its actors hold; `gpu_s_reserved` is what a
GPU cluster bills: the run's wall time times every GPU the model stages hold. CPU time
of processes a stage starts (vLLM's engine core) is not in its timer; its GPU time is.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from stages.base import Stage


class CostLedger:
    """Ray actor: per-stage sums of the batches' costs."""

    def __init__(self):
        self.stages: dict[str, dict[str, float]] = defaultdict(lambda: {"cpu_s": 0.0, "gpu_s": 0.0, "wall_s": 0.0,
                                                                        "batches": 0, "rows_in": 0})

    def add(self, stage: str, cpu_s: float, wall_s: float, num_gpus: float, rows_in: int) -> None:
        s = self.stages[stage]
        s["cpu_s"] += cpu_s
        s["wall_s"] += wall_s
        s["gpu_s"] += wall_s * num_gpus
        s["batches"] += 1
        s["rows_in"] += rows_in

    def totals(self) -> dict[str, dict[str, float]]:
        return dict(self.stages)


def report_batch(ledger: Any, stage: Stage, num_gpus: float) -> None:
    c = stage.last_cost
    ledger.add.remote(stage.name, c.cpu_s, c.wall_s, num_gpus, c.rows_in)


def reporting(stage_cls: type[Stage], ledger: Any, num_gpus: float) -> type[Stage]:
    """`stage_cls` whose every batch is added to `ledger` (for actor pools, which Ray builds from a class)."""
    class Reporting(stage_cls):
        def __call__(self, batch):
            out = super().__call__(batch)
            report_batch(ledger, self, num_gpus)
            return out

    Reporting.__name__ = Reporting.__qualname__ = stage_cls.__name__  # Ray names the operator after it
    return Reporting


def summarize(stages: dict[str, dict[str, float]], samples: int, run_s: float, gpus_held: float) -> dict[str, Any]:
    """Totals and per-accepted-sample figures (samples: written by this run attempt)."""
    per = lambda x: round(x / samples, 4) if samples else None  # noqa: E731
    cpu_s = sum(s["cpu_s"] for s in stages.values())
    gpu_s = sum(s["gpu_s"] for s in stages.values())
    return {
        "samples": samples, "cpu_s": round(cpu_s, 2), "gpu_s": round(gpu_s, 2),
        "gpu_s_reserved": round(run_s * gpus_held, 2),
        "cpu_s_per_sample": per(cpu_s), "gpu_s_per_sample": per(gpu_s), "gpu_s_reserved_per_sample": per(run_s * gpus_held),
        "stages": {name: {"cpu_s": round(s["cpu_s"], 3), "gpu_s": round(s["gpu_s"], 3), "wall_s": round(s["wall_s"], 3),
                          "rows_in": int(s["rows_in"]), "cpu_s_per_sample": per(s["cpu_s"]),
                          "gpu_s_per_sample": per(s["gpu_s"])} for name, s in stages.items()},
    }
