"""What every stage is: a callable `batch -> batch`, built from its own config section.

Batches are dicts of equal-length columns (see schemas/columns.py for the names). The
pipeline hands a stage class to Ray Data's `map_batches` (model stages as actor pools
that run `__init__` once per actor; CPU stages likewise, with more concurrency); unit
tests call the very same object on a plain dict.

Rows already marked failed pass through untouched; a stage marks the rows it cannot
handle with a reason instead of dropping or raising, so nothing is silently lost. A model
stage may opt in to retrying, inside the run and with backoff, the rows its model failed on
(`model_error`: a CUDA or ONNX Runtime error that the next call may not meet); a row that
still fails is left for the next run, which retries every transient failure.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

from datagen.io.faults import is_out_of_memory, is_storage_error
from schemas.columns import FAILED_REASON, FAILED_STAGE, FAILURE_COLUMNS, batch_to_rows, is_failure_mark, rows_to_batch

T = TypeVar("T")


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
    # Batches one actor works on at once (threads). Above 1 only where the stage's backend
    # overlaps them (a vLLM engine loop, an HTTP client): the next batch's requests queue
    # while this one's slowest finish, so the engine never drains at a batch's end.
    batches_in_flight: int = 1
    # Batches Ray hands one actor ahead of those it runs. Ray Data's default (one ahead per
    # running call) leaves the actor idle while the driver sees a batch finish and sends the
    # next: measured 20 ms between the tiny judge's 100 ms batches, 10 ms with 3 ahead.
    # Each one ahead holds a batch of input in the object store per actor.
    batches_ahead: int = 3
    # Batches one Ray task carries to an actor (model stages' actor pools). Each is still its
    # own call of the stage and its own output block, but Ray's per-task work in the actor
    # (reading the input block, storing and reporting the output) is paid once for them:
    # measured 6-15 ms between a 100 ms UDF's calls at one batch per task, ~1 ms at four.
    # The pool's input waits for this many batches' rows before a task starts.
    batches_per_task: int = 4

    def __post_init__(self):
        if self.batches_in_flight < 1:
            raise ValueError(f"batches_in_flight must be >= 1, got {self.batches_in_flight}")
        if self.batches_ahead < 0:
            raise ValueError(f"batches_ahead must be >= 0, got {self.batches_ahead}")
        if self.batches_per_task < 1:
            raise ValueError(f"batches_per_task must be >= 1, got {self.batches_per_task}")
        if self.min_concurrency < 1 or (self.concurrency is not None and self.concurrency < 1):
            raise ValueError(f"concurrency and min_concurrency must be >= 1, got {self.concurrency}, {self.min_concurrency}")
        if self.concurrency is not None and self.min_concurrency > self.concurrency:
            raise ValueError(f"min_concurrency ({self.min_concurrency}) must be <= concurrency ({self.concurrency})")


@dataclass(frozen=True)
class BatchCost:
    """What the stage's last batch cost: CPU-seconds of its process (all threads) and wall seconds."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    rows_in: int = 0


class Stage:
    """Base class: subclasses set `name`, take their Config in `__init__`, implement `process`."""

    name: ClassVar[str] = "stage"
    # In-run retries of rows that failed here with a reason in RETRIED_IN_RUN, each after
    # `retry_backoff_s x 2^attempt`. 0 by default: the caption and judge clients retry their
    # service themselves, and CPU stages read storage through s3fs, which retries too.
    model_retries: ClassVar[int] = 0
    retry_backoff_s: ClassVar[float] = 1.0

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Healthy rows in, rows out (1:1, 1:N, or marked failed; never silently dropped)."""
        raise NotImplementedError

    @property
    def last_cost(self) -> BatchCost:
        """What this thread's last call cost: the stage's own timer, read by the runner after each call."""
        return getattr(_calls, "costs", {}).get(id(self), BatchCost())

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list]:
        """One batch (dict of columns or pyarrow.Table) in, a dict of columns out. Thread-safe
        where `process` is: an actor with `batches_in_flight` > 1 runs several calls at once."""
        clock = self._busy_clock()
        clock.enter()
        rows = batch_to_rows(batch)
        failed = [r for r in rows if is_failure_mark(r.get(FAILED_STAGE))]
        healthy = [r for r in rows if not is_failure_mark(r.get(FAILED_STAGE))]
        for r in healthy:  # NaN (Ray's numpy format for an all-null column) -> None
            r.update(dict.fromkeys(FAILURE_COLUMNS))
        out = (self._process_retrying(healthy) if healthy else []) + failed
        for r in out:
            for c in FAILURE_COLUMNS:
                r.setdefault(c, None)
        columns = list(dict.fromkeys([c for r in out for c in r] or list(batch)))
        result = rows_to_batch(out, columns)
        cpu_s, wall_s = clock.exit()
        if not hasattr(_calls, "costs"):
            _calls.costs = {}
        _calls.costs[id(self)] = BatchCost(cpu_s, wall_s, len(rows))
        return result

    def _busy_clock(self) -> "BusyClock":
        with _clock_lock:  # two first calls at once must share one clock
            return self.__dict__.setdefault("_clock", BusyClock())


    def _process_retrying(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`process(rows)`, then the inputs of rows it failed with a retried reason again (a
        pristine copy each), up to `model_retries` times. Outputs are found by a tag their
        input carries (a 1:N stage copies it into each of its rows); order is kept."""
        if not self.model_retries:
            return self.process(rows)
        pristine = [dict(r) for r in rows]
        for i, r in enumerate(rows):
            r[_INPUT_TAG] = i
        out = self.process(rows)
        for attempt in range(self.model_retries):
            again = sorted({r[_INPUT_TAG] for r in out if r.get(_INPUT_TAG) is not None
                            and r.get(FAILED_STAGE) == self.name and r.get(FAILED_REASON) in RETRIED_IN_RUN})
            if not again:
                break
            time.sleep(self.retry_backoff_s * 2 ** attempt)
            redo = self.process([dict(pristine[i], **{_INPUT_TAG: i}) for i in again])
            out = [r for r in out if r.get(_INPUT_TAG) not in set(again)] + redo
        out.sort(key=lambda r: r.get(_INPUT_TAG, len(rows)))
        for r in out:
            r.pop(_INPUT_TAG, None)
        return out


class BusyClock:
    """The time a stage's calls were running, counted once where calls overlap.

    Each call is charged the busy time (wall and process CPU) that accrued since the last
    call returned, so the charges of overlapping calls add up to the union of their
    intervals, not to the sum: 4 batches in flight for 10 s are 10 GPU-seconds, not 40."""

    def __init__(self):
        self._lock = threading.Lock()
        self._active = 0
        self._since = (0.0, 0.0)  # (wall, cpu) when the current busy period began
        self._total = [0.0, 0.0]  # busy wall and cpu seconds of finished periods
        self._charged = [0.0, 0.0]  # what earlier calls were charged

    def enter(self) -> None:
        with self._lock:
            if self._active == 0:
                self._since = (time.perf_counter(), time.process_time())
            self._active += 1

    def exit(self) -> tuple[float, float]:
        """(cpu_s, wall_s) this call is charged."""
        with self._lock:
            now = (time.perf_counter(), time.process_time())
            busy = [self._total[k] + now[k] - self._since[k] for k in (0, 1)]
            self._active -= 1
            if self._active == 0:
                self._total = busy
            else:  # the period goes on: count from here next time
                self._total, self._since = busy, now
            charge = [busy[k] - self._charged[k] for k in (0, 1)]
            self._charged = busy
            return charge[1], charge[0]


_calls = threading.local()  # each thread's last cost per stage instance (id -> BatchCost)
_clock_lock = threading.Lock()
_INPUT_TAG = "_stage_input_index"  # private to _process_retrying: never leaves the stage
RETRIED_IN_RUN = frozenset({"model_error"})  # OOM is split down to single rows already (split_on_oom)


def fail(row: dict[str, Any], stage: str, reason: str, detail: str) -> dict[str, Any]:
    """Return `row` marked failed at `stage` (first failure wins)."""
    if not is_failure_mark(row.get("failed_stage")):
        row.update(failed_stage=stage, failed_reason=reason, failed_detail=str(detail)[:2000])
    return row


def failure_reason(e: BaseException, default: str) -> str:
    """The declared reason for an exception a stage caught: the world failing (out of
    memory, storage) is transient and retried by the next run; anything else is `default`."""
    if is_out_of_memory(e):
        return "out_of_memory"
    if is_storage_error(e):
        return "storage_error"
    return default


def pixel_batches(pixels: Sequence[int], max_batch_pixels: int, max_batch_rows: int) -> list[list[int]]:
    """Consecutive index groups of at most `max_batch_pixels` pixels and `max_batch_rows`
    rows; an item larger than the pixel budget goes alone. Memory grows with pixels, not rows."""
    batches: list[list[int]] = []
    total = 0
    for i, n in enumerate(pixels):
        if not batches or total + n > max_batch_pixels or len(batches[-1]) >= max_batch_rows:
            batches.append([])
            total = 0
        batches[-1].append(i)
        total += n
    return batches


def split_on_oom(run: Callable[[list[T]], list[Any]], items: list[T]) -> list[Any]:
    """`run(items)`, one result per item. A batch that runs out of memory is split in
    halves and each half retried, down to single items; a single item that still runs out
    gets the exception as its result (the caller marks it `out_of_memory`). Other errors
    are raised: they are not a matter of batch size."""
    try:
        return run(items)
    except Exception as e:  # noqa: BLE001 -- only OOM is handled; the rest is re-raised
        if not is_out_of_memory(e):
            raise
        _release_cached_memory()
        if len(items) == 1:
            return [e]
    half = len(items) // 2
    return split_on_oom(run, items[:half]) + split_on_oom(run, items[half:])


def _release_cached_memory() -> None:
    """Hand the failed batch's cached CUDA blocks back before the halves run."""
    torch = sys.modules.get("torch")  # only a stage that imported torch can have run out on a GPU
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
