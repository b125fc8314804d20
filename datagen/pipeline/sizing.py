"""How many workers each stage gets, from the cluster's CPUs and GPUs (a pure function).

Model stages run as autoscaling actor pools: `min_concurrency` actors stay loaded for the
whole run, and a pool grows while its actors are busy, up to `concurrency` or, when that
is unset, as many actors as the cluster's GPUs (or CPUs, for a CPU-only model stage)
could hold. Every pool may grow into the whole cluster: Ray Data only adds an actor to
a pool whose actors are all busy, so the stage that limits the run is the one that grows.
CPU stages run as task pools capped at the CPUs the model stages' resident actors leave
free, divided by the stage's `num_cpus`: on a 96-CPU node that is ~90 decode tasks, not 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from stages.base import Resources

CPU_STAGES = ("ingest", "shots", "pairs", "assemble")


@dataclass(frozen=True)
class StageCompute:
    """One stage's Ray Data compute strategy."""

    kind: Literal["tasks", "actors"]
    min_size: int  # actors loaded all run (tasks: 1)
    max_size: int  # most actors, or most tasks in flight
    calls_per_actor: int = 1  # batches one actor runs at once (Resources.batches_in_flight)
    ahead_per_actor: int = 3  # batches sent to an actor beyond those it runs (Resources.batches_ahead)
    batches_per_task: int = 1  # batches one Ray task carries, each its own call (Resources.batches_per_task)

    @classmethod
    def actor_pool(cls, res: Resources, min_size: int, max_size: int) -> "StageCompute":
        """Between `min_size` and `max_size` actors of `res`, each running and queued its batches."""
        return cls("actors", min_size, max_size, res.batches_in_flight, res.batches_ahead, res.batches_per_task)

    def task_rows(self, batch_size: int) -> int:
        """Rows of one Ray task (map_batches' batch_size): `batches_per_task` batches of the stage's."""
        return batch_size * self.batches_per_task

    def ray_strategy(self) -> Any:
        import ray

        if self.kind == "tasks":
            return ray.data.TaskPoolStrategy(size=self.max_size)
        # Ray counts tasks: the batches ahead, rounded up to whole tasks
        in_flight = self.calls_per_actor + math.ceil(self.ahead_per_actor / self.batches_per_task)
        if self.calls_per_actor == 1:
            return ray.data.ActorPoolStrategy(min_size=self.min_size, max_size=self.max_size,
                                              max_tasks_in_flight_per_actor=in_flight)
        # Ray runs an actor's calls one at a time unless told that the UDF itself is thread-safe
        return ray.data.ActorPoolStrategy(min_size=self.min_size, max_size=self.max_size,
                                          max_concurrent_calls_per_actor=self.calls_per_actor,
                                          max_tasks_in_flight_per_actor=in_flight,
                                          enable_true_multi_threading=True)

    @property
    def slots(self) -> int:
        """Batches the stage can work on at once, all workers together (busy share's denominator)."""
        return self.max_size * self.calls_per_actor


def resident(res: Resources, unit: Literal["CPU", "GPU"]) -> float:
    """CPUs or GPUs a model stage holds for the whole run: its `min_concurrency` actors."""
    return (res.num_cpus if unit == "CPU" else res.num_gpus) * res.min_concurrency


def _fit(res: Resources, cpus: float, gpus: float) -> int:
    """How many workers of `res` the given CPUs and GPUs hold at once (a small epsilon:
    0.5 GPU x 2 must fit in 1.0 although floats add up to 0.999...). A worker that asks
    for nothing gets one per CPU."""
    n = math.floor(cpus / res.num_cpus + 1e-9) if res.num_cpus > 0 else math.floor(cpus)
    if res.num_gpus > 0:
        n = min(n, math.floor(gpus / res.num_gpus + 1e-9))
    return int(n)


def plan_compute(cfg: Any, cluster: Mapping[str, float]) -> dict[str, StageCompute]:
    """Each stage's compute strategy (`cfg` a PipelineConfig, `cluster` as ray.cluster_resources())."""
    cpus, gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    plan: dict[str, StageCompute] = {}
    for name in cfg.model_stages:
        res = cfg.section(name).resources
        most = res.concurrency if res.concurrency is not None else _fit(res, cpus, gpus)
        plan[name] = StageCompute.actor_pool(res, res.min_concurrency, max(res.min_concurrency, most))
    free_cpus = max(0.0, cpus - sum(resident(cfg.section(n).resources, "CPU") for n in cfg.model_stages))
    for name in CPU_STAGES:
        res = getattr(cfg, name).resources
        most = res.concurrency if res.concurrency is not None else max(1, _fit(res, free_cpus, 0.0))
        plan[name] = StageCompute("tasks", 1, most)
    return plan
