"""What every stage is: a callable `batch -> batch`, built from its own config section.

Batches are dicts of equal-length columns (see schemas/columns.py for the names). The
pipeline hands a stage class to Ray Data's `map_batches` (model stages as actor pools
that run `__init__` once per actor; CPU stages likewise, with more concurrency); unit
tests call the very same object on a plain dict.

Rows already marked failed pass through untouched; a stage marks the rows it cannot
handle with a reason instead of dropping or raising, so nothing is silently lost.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from schemas.columns import FAILED_STAGE, FAILURE_COLUMNS, batch_to_rows, is_failure_mark, rows_to_batch


@dataclass
class Resources:
    """What one worker of a stage needs, and how many run; read by the pipeline."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0  # fractions share a GPU between actors of small models
    batch_size: int = 8
    # Most workers at once (actors of a model stage, parallel tasks of a CPU stage); None:
    # sized from the cluster's CPUs and GPUs at the start of the run (datagen/pipeline/sizing.py).
    concurrency: int | None = None
    min_concurrency: int = 1  # model stages: actors kept loaded all run; the pool autoscales above it

    def __post_init__(self):
        if self.min_concurrency < 1 or (self.concurrency is not None and self.concurrency < 1):
            raise ValueError(f"concurrency and min_concurrency must be >= 1, got {self.concurrency}, {self.min_concurrency}")
        if self.concurrency is not None and self.min_concurrency > self.concurrency:
            raise ValueError(f"min_concurrency ({self.min_concurrency}) must be <= concurrency ({self.concurrency})")


class Stage:
    """Base class: subclasses set `name`, take their Config in `__init__`, implement `process`."""

    name: ClassVar[str] = "stage"

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Healthy rows in, rows out (1:1, 1:N, or marked failed; never silently dropped)."""
        raise NotImplementedError

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list]:
        """One batch (dict of columns or pyarrow.Table) in, a dict of columns out."""
        rows = batch_to_rows(batch)
        failed = [r for r in rows if is_failure_mark(r.get(FAILED_STAGE))]
        healthy = [r for r in rows if not is_failure_mark(r.get(FAILED_STAGE))]
        for r in healthy:  # NaN (Ray's numpy format for an all-null column) -> None
            r.update(dict.fromkeys(FAILURE_COLUMNS))
        out = (self.process(healthy) if healthy else []) + failed
        for r in out:
            for c in FAILURE_COLUMNS:
                r.setdefault(c, None)
        columns = list(dict.fromkeys([c for r in out for c in r] or list(batch)))
        return rows_to_batch(out, columns)


def fail(row: dict[str, Any], stage: str, reason: str, detail: str) -> dict[str, Any]:
    """Return `row` marked failed at `stage` (first failure wins)."""
    if not is_failure_mark(row.get("failed_stage")):
        row.update(failed_stage=stage, failed_reason=reason, failed_detail=str(detail)[:2000])
    return row
