"""An actor with `resources.batches_in_flight` > 1 runs that many batches of a stage at once,
and the stage's cost timer counts overlapping calls once (4 batches for 10 s: 10 s, not 40)."""
import threading
import time

import pytest

from datagen.pipeline.sizing import StageCompute
from stages.base import BusyClock, Stage


class Meeting(Stage):
    """Every batch waits for another batch to be inside `process` with it: only calls that
    overlap get through; a batch left alone (calls one at a time) is marked failed."""

    name = "meeting"

    def __init__(self, config=None):
        self.meet = threading.Barrier(2, timeout=30)

    def process(self, rows):
        try:
            self.meet.wait()
            ok = True
        except threading.BrokenBarrierError:
            ok = False
        self.meet.reset() if not ok else None
        for r in rows:
            r["met"] = ok
        return rows


def test_overlapping_calls_are_charged_their_union_of_time():
    clock = BusyClock()
    inside, leave = threading.Barrier(2), threading.Event()
    charged = []

    def call(hold: float):
        clock.enter()
        inside.wait()
        leave.wait(hold)  # the call's work: hold the clock this long
        charged.append(clock.exit()[1])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=call, args=(0.3,)), threading.Thread(target=call, args=(0.6,))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    span = time.perf_counter() - t0
    assert 0.6 <= sum(charged) <= span  # summed per call, the two would be >= 0.9 s
    clock.enter()
    assert clock.exit()[1] < 0.1  # a later call pays only for itself


def test_a_stage_called_from_two_threads_gives_each_its_own_cost():
    stage = Meeting()
    outs = {}

    def call(k):
        outs[k] = (stage({"x": list(range(k + 1))}), stage.last_cost)

    threads = [threading.Thread(target=call, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [outs[k][0]["met"] for k in (0, 1)] == [[True], [True, True]]
    assert [outs[k][1].rows_in for k in (0, 1)] == [1, 2]


@pytest.mark.slow
def test_ray_runs_an_actor_s_batches_together_when_asked(ray_local):
    ray = pytest.importorskip("ray")
    ds = ray.data.from_items([{"x": i} for i in range(8)], override_num_blocks=4)
    out = ds.map_batches(Meeting, batch_size=2, num_cpus=0.5,
                         compute=StageCompute("actors", 1, 1, calls_per_actor=2).ray_strategy()).take_all()
    assert sorted(r["x"] for r in out) == list(range(8)) and all(r["met"] for r in out)


class Sizes(Stage):
    """Marks each row with the size of the call that processed it and the process it ran in."""

    name = "sizes"

    def __init__(self, config=None):
        pass

    def process(self, rows):
        import os

        for r in rows:
            r.update(call_rows=len(rows), pid=os.getpid())
        return rows


@pytest.mark.slow
def test_a_ray_task_of_four_batches_reaches_the_stage_as_four_calls(ray_local):
    """Blocks of 2 rows (one batch each, as a model stage's output reaches the next), 4 batches
    a task: the stage is called with 2 rows at a time, and every row comes out once."""
    ray = pytest.importorskip("ray")
    from datagen.pipeline.actors import actor_class

    pool = StageCompute("actors", 1, 1, batches_per_task=4)
    ds = ray.data.from_items([{"x": i} for i in range(16)], override_num_blocks=8)
    out = ds.map_batches(actor_class(Sizes, 2), batch_size=pool.task_rows(2), num_cpus=0.5,
                         compute=pool.ray_strategy(), batch_format="pyarrow").take_all()
    assert sorted(r["x"] for r in out) == list(range(16))
    assert {r["call_rows"] for r in out} == {2} and len({r["pid"] for r in out}) == 1
