"""Take the next batch off the loader while the current step computes.

Receiving a batch from a DataLoader worker (unpickling it, mapping its tensors' shared memory)
runs in the training process; with no `pin_memory` thread (CPU runs) it happens inside
`next()` and counts as data wait, ~1-2 ms a batch: several % of a fast step. A thread that
keeps `depth` batches received overlaps that with the step (torch releases the GIL while it
computes). GPU runs pin memory, and torch's pin thread does the same already.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
# A thread stuck inside the loader (a worker that never answers) is left behind, a daemon,
# rather than hanging the end of training.
STOP_WAIT_S = 10.0
_END = object()


class _Raised:
    def __init__(self, error: BaseException):
        self.error = error


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """`items` in order, `depth` of them fetched ahead by a thread; errors re-raised in order.
    Closing the generator stops the thread and lets go of `items` (the loader's workers end)."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fill() -> None:
        source = iter(items)
        try:
            for item in source:
                while not stop.is_set():
                    try:
                        ready.put(item, timeout=0.1)  # wakes to see `stop` when the consumer has gone
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer, raised there
            ready.put(_Raised(e))
        finally:
            del source  # the loader iterator: its worker processes shut down with it

    thread = threading.Thread(target=fill, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        deadline = time.monotonic() + STOP_WAIT_S
        while thread.is_alive() and time.monotonic() < deadline:  # unblock a put waiting for room
            try:
                ready.get(timeout=0.1)
            except queue.Empty:
                pass
