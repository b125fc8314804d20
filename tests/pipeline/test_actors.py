"""A model-stage actor's class: the stage itself, frozen for the garbage collector once built."""
from __future__ import annotations

import gc
import weakref

import pytest

from datagen.pipeline.actors import actor_class


class Holder:
    """Stands in for a model stage: builds long-lived objects, then makes garbage per call."""

    def __init__(self, size: int):
        self.model = [{"w": i} for i in range(size)]

    def __call__(self, batch):
        a, b = Node(), Node()
        a.other, b.other = b, a  # a reference cycle: only the collector frees it
        return weakref.ref(a)


class Node:
    other = None


@pytest.fixture(autouse=True)
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process is not an actor: give its objects back to the collector


def test_constructed_objects_are_frozen_and_the_name_kept():
    cls = actor_class(Holder)
    assert cls.__name__ == "Holder" and issubclass(cls, Holder)
    before = gc.get_freeze_count()
    actor = cls(size=1000)
    assert gc.get_freeze_count() >= before + 1000  # the "model" is in the permanent generation
    assert len(actor.model) == 1000


def test_what_a_batch_allocates_is_still_collected():
    actor = actor_class(Holder)(size=10)
    ref = actor({})
    gc.collect()
    assert ref() is None


class Calls:
    """Records the rows of each call it gets; a 1:2 stage (each row out twice), like pairs from a video."""

    def __init__(self):
        self.calls = []

    def __call__(self, batch):
        rows = batch["x"] if isinstance(batch, dict) else batch.column("x").to_pylist()
        self.calls.append(list(rows))
        return {"x": [v for v in rows for _ in range(2)]}


@pytest.mark.parametrize("kind", ["dict", "pyarrow"])
def test_a_task_of_several_batches_is_run_as_calls_of_the_stage_s_batch_size(kind):
    import pyarrow as pa

    actor = actor_class(Calls, rows_per_call=4)()
    batch = {"x": list(range(10))}
    out = actor(pa.table(batch) if kind == "pyarrow" else batch)
    outputs = list(out)  # one output per call, each yielded as it is made
    assert actor.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [o["x"] for o in outputs] == [[0, 0, 1, 1, 2, 2, 3, 3], [4, 4, 5, 5, 6, 6, 7, 7], [8, 8, 9, 9]]


def test_a_batch_within_the_call_size_is_one_plain_call():
    actor = actor_class(Calls, rows_per_call=4)()
    assert actor({"x": [1, 2, 3, 4]}) == {"x": [1, 1, 2, 2, 3, 3, 4, 4]} and actor.calls == [[1, 2, 3, 4]]
    unsplit = actor_class(Calls)()
    assert unsplit({"x": list(range(9))})["x"][-1] == 8 and len(unsplit.calls) == 1
