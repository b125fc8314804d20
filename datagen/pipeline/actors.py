"""The class Ray builds a model stage's actors from: the stage, whose long-lived objects are frozen once built.

A model actor holds the imported libraries (torch, transformers) and its model: ~370k
objects that the garbage collector walks on every full collection (0.21 s each, measured
with the stage modules imported) and once more as the actor exits, ~1 s of CPU per actor
that the next job on the node loses (measured: a depth re-label right after a caption
re-label, in one driver, took 9.5 s instead of 6.9 s while the caption actors exited).
`gc.freeze()` after construction moves them into the permanent generation, which no
collection visits; what a batch allocates is collected as before.
"""
from __future__ import annotations

import gc
from typing import Any, Iterator

from schemas.columns import num_rows


def actor_class(cls: type, rows_per_call: int | None = None) -> type:
    """`cls`, frozen for the garbage collector once constructed (Ray names the operator after it).

    With `rows_per_call`, a batch of more rows (a Ray task carrying several of the stage's
    batches, StageCompute.batches_per_task) is run as consecutive calls of that many rows,
    each output yielded as its own block as soon as it is made: the stage sees the batches
    it was sized for, and what follows it in the pipeline gets them one by one.
    """

    class Actor(cls):
        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            gc.freeze()

        def __call__(self, batch: Any) -> Any:
            n = num_rows(batch)
            if rows_per_call is None or n <= rows_per_call:
                return super().__call__(batch)
            return self._calls(batch, n)

        def _calls(self, batch: Any, n: int) -> Iterator[Any]:
            for start in range(0, n, rows_per_call):
                yield super().__call__(_rows(batch, start, rows_per_call))

    Actor.__name__ = Actor.__qualname__ = cls.__name__
    Actor.__module__ = cls.__module__
    return Actor


def _rows(batch: Any, start: int, count: int) -> Any:
    """Rows `start`..`start + count` of a pyarrow.Table (a zero-copy slice) or a dict of columns."""
    if hasattr(batch, "slice"):
        return batch.slice(start, count)
    return {c: v[start:start + count] for c, v in batch.items()}
