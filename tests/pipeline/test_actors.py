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
