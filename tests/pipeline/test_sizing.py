"""Stage sizing from a cluster-resources dict (no Ray): CPU stages follow the cluster's
CPUs, model stages are autoscaling actor pools bounded by what the cluster holds."""
from __future__ import annotations

import pytest

from datagen import UserError
from datagen.pipeline.config import load_config
from datagen.pipeline.sizing import plan_compute


def test_gpu_profile_on_one_8_gpu_node_grows_pools_into_the_gpus_and_decodes_on_the_free_cpus():
    cfg = load_config("gpu")
    plan = plan_compute(cfg, {"CPU": 96.0, "GPU": 8.0, "memory": 1e12})
    # caption: 1 GPU and 4 CPUs an actor; segment/depth: half a GPU and 2 CPUs
    assert (plan["caption"].kind, plan["caption"].min_size, plan["caption"].max_size) == ("actors", 1, 8)
    assert (plan["segment"].min_size, plan["segment"].max_size) == (1, 16)
    assert (plan["depth"].min_size, plan["depth"].max_size) == (1, 16)
    assert (plan["edges"].min_size, plan["edges"].max_size) == (1, 96)  # CPU-only model stage: one actor a CPU
    # resident actors hold 2 + 2 (text, safety) + 4 + 4 (caption, verify) + 2 + 2 + 1 = 17 CPUs;
    # the CPU stages (1 CPU a task) share the other 79
    for name in ("ingest", "shots", "pairs", "assemble"):
        assert (plan[name].kind, plan[name].max_size) == ("tasks", 79), name


def test_sizes_scale_with_the_cluster_not_a_fixed_two():
    cfg = load_config("gpu")
    small = plan_compute(cfg, {"CPU": 32.0, "GPU": 2.0})
    big = plan_compute(cfg, {"CPU": 32.0 * 8, "GPU": 16.0})
    assert small["pairs"].max_size == 32 - 17 and big["pairs"].max_size == 256 - 17
    assert small["caption"].max_size == 2 and big["caption"].max_size == 16
    # a GPU stage is bounded by CPUs too: 4 GPUs but only 6 CPUs -> one caption actor of 4 CPUs
    assert plan_compute(cfg, {"CPU": 6.0, "GPU": 4.0})["caption"].max_size == 1


def test_fractional_gpus_fit_exactly():
    cfg = load_config("gpu", ["depth.resources.num_gpus=0.1", "depth.resources.num_cpus=0.1"])
    assert plan_compute(cfg, {"CPU": 64.0, "GPU": 1.0})["depth"].max_size == 10


def test_explicit_concurrency_caps_and_min_concurrency_stays_loaded():
    cfg = load_config("gpu", ["caption.resources.concurrency=3", "caption.resources.min_concurrency=2",
                              "pairs.resources.concurrency=5"])
    plan = plan_compute(cfg, {"CPU": 96.0, "GPU": 8.0})
    assert (plan["caption"].min_size, plan["caption"].max_size) == (2, 3)
    assert plan["pairs"].max_size == 5
    # two resident caption actors: 2 + 2 + 8 + 4 + 2 + 2 + 1 CPUs held
    assert plan["shots"].max_size == 96 - 21


def test_cpu_profile_on_two_cores_keeps_todays_two_tasks_and_one_actor_each():
    plan = plan_compute(load_config("cpu"), {"CPU": 2.0})
    assert all((plan[s].min_size, plan[s].max_size) == (1, 1) for s in ("caption", "segment", "depth", "edges"))
    assert all(plan[s].max_size == 2 for s in ("ingest", "shots", "pairs", "assemble"))  # (2 - 4 x 0.25) / 0.5


def test_no_gpus_keeps_the_resident_actor_and_never_a_zero_pool():
    plan = plan_compute(load_config("gpu"), {"CPU": 4.0})
    assert (plan["caption"].min_size, plan["caption"].max_size) == (1, 1)
    assert plan["ingest"].max_size == 1  # every CPU held by actors: still one task


def test_min_above_cap_is_a_config_error():
    with pytest.raises(UserError, match="min_concurrency"):
        load_config("gpu", ["depth.resources.concurrency=1", "depth.resources.min_concurrency=2"])


def test_ray_strategies_match_the_plan():
    ray_data = pytest.importorskip("ray.data")
    plan = plan_compute(load_config("gpu"), {"CPU": 32.0, "GPU": 1.0})
    caption, pairs = plan["caption"].ray_strategy(), plan["pairs"].ray_strategy()
    assert isinstance(caption, ray_data.ActorPoolStrategy) and (caption.min_size, caption.max_size) == (1, 1)
    # the caption actors of the gpu profile run 4 tasks at once and get 3 batches more ahead:
    # one task, since a task carries 4 batches
    assert plan["caption"].batches_per_task == 4 and plan["caption"].task_rows(64) == 256
    assert caption.max_tasks_in_flight_per_actor == 4 + 1
    depth = plan_compute(load_config("cpu", ["depth.resources.batches_ahead=5"]), {"CPU": 2.0})["depth"]
    assert depth.ray_strategy().max_tasks_in_flight_per_actor == 1 + 2  # 5 batches ahead: two tasks of 4
    one = plan_compute(load_config("cpu", ["depth.resources.batches_per_task=1", "depth.resources.batches_ahead=1"]),
                       {"CPU": 2.0})["depth"]
    assert one.ray_strategy().max_tasks_in_flight_per_actor == 1 + 1 and one.task_rows(8) == 8
    assert isinstance(pairs, ray_data.TaskPoolStrategy) and pairs.size == 32 - 17


def test_a_vlm_actor_runs_several_batches_at_once_on_the_gpu_profile_and_one_on_the_cpu_profile():
    pytest.importorskip("ray.data")
    gpu = plan_compute(load_config("gpu"), {"CPU": 32.0, "GPU": 2.0})
    strategy = gpu["caption"].ray_strategy()
    assert (strategy.max_concurrent_calls_per_actor, strategy.enable_true_multi_threading) == (4, True)
    assert gpu["caption"].slots == 2 * 4 and gpu["segment"].calls_per_actor == 1
    cpu = plan_compute(load_config("cpu"), {"CPU": 2.0})
    assert cpu["caption"].calls_per_actor == 1 and cpu["caption"].ray_strategy().max_concurrent_calls_per_actor is None
    with pytest.raises(UserError, match="batches_in_flight"):
        load_config("gpu", ["caption.resources.batches_in_flight=0"])
    with pytest.raises(UserError, match="batches_ahead"):
        load_config("gpu", ["caption.resources.batches_ahead=-1"])
    with pytest.raises(UserError, match="batches_per_task"):
        load_config("gpu", ["caption.resources.batches_per_task=0"])
