"""Training end to end on CPU: the loss falls on a handful of samples; a resumed run equals an unbroken one."""
import json

import pytest
import torch

from datagen.train import checkpoint
from datagen.train.train import lr_factor, OptimConfig, run
from tests.train.conftest import saved_weights, tiny_config, write_dataset


def _metric(run_dir, name):
    return {r["step"]: r[name] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def _losses(run_dir):
    return _metric(run_dir, "loss")


@pytest.mark.slow
def test_overfits_a_handful_of_samples(tmp_path, tiny_models):
    ds = write_dataset(tmp_path / "ds", {1: 4})  # 4 edits: canvas -> target
    cfg = tiny_config(tmp_path / "run", tiny_models, ds, steps=150, optim=OptimConfig(lr=2e-3, warmup_steps=0))
    cfg.flow.text_drop = cfg.flow.context_drop = cfg.flow.image_drop = 0.0
    run(cfg)
    losses = _losses(tmp_path / "run")
    first = sum(losses[s] for s in range(1, 26)) / 25
    last = sum(losses[s] for s in range(126, 151)) / 25
    assert last < 0.5 * first, (first, last)
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["loss_per_task"].keys() == {"instruction_edit"} and rec["tokens_per_s"] > 0 and 0 <= rec["data_wait_share"] < 1


def test_resume_continues_exactly(tmp_path, tiny_models, small_dataset):
    def cfg(name):
        c = tiny_config(tmp_path / name, tiny_models, small_dataset, steps=8,
                        optim=OptimConfig(lr=1e-3, warmup_steps=3, schedule="cosine"))
        c.data.epoch_batches = 3  # pauses at step 3 (an epoch boundary) and step 5 (inside epoch 1)
        c.ckpt_every = 4
        return c

    run(cfg("straight"))
    run(cfg("broken"), stop_at=3)
    paused = checkpoint.read_meta(checkpoint.latest(tmp_path / "broken"))
    assert paused["step"] == 3 and paused["data"] == {"epoch": 1, "batches_into_epoch": 0}
    run(cfg("broken"), resume=True, stop_at=5)
    assert checkpoint.read_meta(checkpoint.latest(tmp_path / "broken"))["data"] == {"epoch": 1,
                                                                                    "batches_into_epoch": 2}
    run(cfg("broken"), resume=True)
    a, b = (checkpoint.latest(tmp_path / name) for name in ("straight", "broken"))
    a_meta, b_meta = checkpoint.read_meta(a), checkpoint.read_meta(b)
    assert a_meta["step"] == b_meta["step"] == 8 and b_meta["data"] == {"epoch": 2, "batches_into_epoch": 2}
    for part in ("model", "ema"):
        wa, wb = saved_weights(a, part), saved_weights(b, part)
        for k in wa:
            assert torch.allclose(wa[k], wb[k], atol=1e-6), (part, k)
    assert a_meta["scheduler"]["last_epoch"] == b_meta["scheduler"]["last_epoch"] == 8
    straight, broken = _losses(tmp_path / "straight"), _losses(tmp_path / "broken")
    assert sorted(broken) == list(range(1, 9))  # the curve continues after each pause, no gap, no repeat
    for s in range(1, 9):
        assert broken[s] == pytest.approx(straight[s], rel=1e-5)
    # the parameters moved between the two checkpoints: equality is not two frozen models
    mid, end = saved_weights(tmp_path / "broken" / "checkpoints" / "step_00000004"), saved_weights(b)
    assert any(not torch.allclose(mid[k], end[k]) for k in end)


def test_gradient_accumulation_equals_the_large_batch(tmp_path, tiny_models):
    """4 x 2 accumulated micro-batches and one batch of 8 train to the same weights (to 1e-5).

    Three tasks of two frames each (one frame count: the two runs read the samples in the same order) and
    guidance dropout on: every sample keeps its noise, timestep and dropout whatever batch it lands in."""
    ds = write_dataset(tmp_path / "ds", {1: 8, 4: 8, 6: 8})
    runs = {}
    for name, batch_size, accum in (("big", 8, 1), ("accum", 4, 2)):
        cfg = tiny_config(tmp_path / name, tiny_models, ds, steps=3, batch_size=batch_size, grad_accum_steps=accum)
        cfg.data.epoch_batches = 40 // batch_size  # the same samples per epoch
        run(cfg)
        runs[name] = cfg
    big, acc = (checkpoint.latest(tmp_path / name) for name in ("big", "accum"))
    for part in ("model", "ema"):
        a, b = saved_weights(big, part), saved_weights(acc, part)
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5, part
    assert saved_weights(big)["out.weight"].abs().sum() > 0  # trained: equality is not two untouched models
    assert _losses(tmp_path / "big") == pytest.approx(_losses(tmp_path / "accum"), rel=1e-5)
    # Adam hides a gradient's scale from the weights: the norms pin that the accumulated gradient is the mean
    assert _metric(tmp_path / "big", "grad_norm") == pytest.approx(_metric(tmp_path / "accum", "grad_norm"), rel=1e-5)
    assert checkpoint.read_meta(acc)["data"]["batches_into_epoch"] == 6  # the loader moved 2 batches a step


def test_checkpoints_are_atomic_and_pruned(tmp_path, tiny_models, small_dataset):
    cfg = tiny_config(tmp_path / "run", tiny_models, small_dataset, steps=6, precision="bf16")  # CPU autocast
    cfg.ckpt_every, cfg.keep_checkpoints = 2, 2
    cfg.sample.every_steps = 3
    run(cfg)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step_00000004", "step_00000006"]  # no temporary directories left, oldest pruned
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_00000003.png",
                                                                                  "step_00000006.png"]
    assert any((tmp_path / "run" / "tb").iterdir())


def test_lr_schedule():
    o = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, o, 110) == pytest.approx(0.1)
    assert lr_factor(9, o, 110) == pytest.approx(1.0)
    assert lr_factor(60, o, 110) == pytest.approx(0.55)
    assert lr_factor(110, o, 110) == pytest.approx(0.1)
    assert lr_factor(500, OptimConfig(warmup_steps=10), 110) == 1.0
