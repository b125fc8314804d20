"""Two CPU processes (gloo): DDP ranks stay in sync; FSDP trains what DDP trains and its sharded checkpoint
resumes on one process; FSDP bf16 computes in bf16 over fp32 master weights; a kill mid-save loses nothing.

Kept to three 2-process launches: each costs a fresh torch import per process on the shared CI cores."""

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from datagen.train import checkpoint
from tests.conftest import free_port
from tests.train.conftest import saved_weights, tiny_config

REPO = Path(__file__).resolve().parents[2]


def _worker(rank: int, world: int, port: int, cfg, out_dir, resume: bool, stop_at) -> None:
    from datagen.train import model as model_module
    from datagen.train.train import run

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    compute_dtypes = set()
    attend = model_module.Attention.forward

    def recording(self, x, cos, sin, mask):  # the dtype the weights have while they compute
        compute_dtypes.add(str(self.qkv.weight.dtype))
        return attend(self, x, cos, sin, mask)

    model_module.Attention.forward = recording
    model = run(cfg, resume=resume, stop_at=stop_at)
    if cfg.parallel == "ddp":
        torch.save(model.state_dict(), f"{out_dir}/rank{rank}.pt")
    master = sorted({str(p.dtype) for p in model.parameters()})
    Path(f"{out_dir}/dtypes{rank}.json").write_text(json.dumps({"compute": sorted(compute_dtypes), "master": master}))


def _launch(cfg, out_dir, resume: bool = False, stop_at=None) -> None:
    mp.spawn(_worker, args=(2, free_port(), cfg, str(out_dir), resume, stop_at), nprocs=2, join=True)


def _restored(path):
    """Model, EMA, optimizer and schedule of a checkpoint, restored in this single process."""
    from datagen.train.ema import make_ema
    from datagen.train.model import FrameDiT
    from datagen.train.presets import ModelConfig

    meta = checkpoint.read_meta(path)
    model = FrameDiT(ModelConfig(**meta["model_config"]))
    ema = make_ema(model)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    checkpoint.restore(path, model, ema, optimizer, scheduler)
    return model, ema, optimizer, scheduler


@pytest.mark.slow
def test_ddp_ranks_stay_in_sync_fsdp_agrees_and_resumes_on_one_process(tmp_path, tiny_models, small_dataset):
    from datagen.train.train import run

    ddp = tiny_config(tmp_path / "ddp", tiny_models, small_dataset, steps=2, batch_size=2)
    _launch(ddp, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # gradients were averaged: replicas identical
    ddp_ckpt = checkpoint.latest(tmp_path / "ddp")
    saved = saved_weights(ddp_ckpt)
    assert all(torch.equal(saved[k], r0[k]) for k in r0)
    assert saved["out.weight"].abs().sum() > 0  # trained: the zero-initialised output layer moved

    # FSDP writes a sharded checkpoint (each rank its own shards); read back whole on ONE process (2 -> 1),
    # it holds what DDP trained: the same data, noise and arithmetic up to reduction order, optimizer included
    fsdp = tiny_config(tmp_path / "fsdp", tiny_models, small_dataset, steps=2, batch_size=2, parallel="fsdp")
    _launch(fsdp, tmp_path)
    fsdp_ckpt = checkpoint.latest(tmp_path / "fsdp")
    fsdp_model, fsdp_ema, fsdp_opt, fsdp_sched = _restored(fsdp_ckpt)
    ddp_model, ddp_ema, ddp_opt, _ = _restored(ddp_ckpt)
    for a, b in ((fsdp_model, ddp_model), (fsdp_ema, ddp_ema)):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(x, y, atol=1e-5), k
    moments = [(fsdp_opt.state[p], ddp_opt.state[q]) for p, q in zip(fsdp_model.parameters(), ddp_model.parameters())]
    assert all(float(s["step"]) == 2 for s, _ in moments)
    for s, r in moments:
        assert torch.allclose(s["exp_avg"], r["exp_avg"], atol=1e-6) and torch.allclose(s["exp_avg_sq"], r["exp_avg_sq"])
    assert fsdp_sched.last_epoch == 2
    # ... and the run resumes there on one process
    fsdp.parallel, fsdp.steps = "ddp", 3
    run(fsdp, resume=True)
    meta = checkpoint.read_meta(checkpoint.latest(tmp_path / "fsdp"))
    assert meta["step"] == 3 and meta["data"] == {"epoch": 0, "batches_into_epoch": 3}


@pytest.mark.slow
def test_fsdp_bf16_computes_in_bf16_and_keeps_fp32_master_weights(tmp_path, tiny_models, small_dataset):
    cfg = tiny_config(tmp_path / "bf16", tiny_models, small_dataset, steps=2, batch_size=2, parallel="fsdp",
                      precision="bf16")
    _launch(cfg, tmp_path)
    for rank in range(2):
        dtypes = json.loads((tmp_path / f"dtypes{rank}.json").read_text())
        assert dtypes == {"compute": ["torch.bfloat16"], "master": ["torch.float32"]}, rank
    losses = [json.loads(line)["loss"] for line in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    weights = saved_weights(checkpoint.latest(tmp_path / "bf16"))
    assert {w.dtype for w in weights.values()} == {torch.float32} and weights["out.weight"].abs().sum() > 0


@pytest.mark.slow
def test_a_kill_mid_save_resumes_from_the_previous_checkpoint(tmp_path, tiny_models, small_dataset):
    from datagen.train.train import run

    cfg = tiny_config(tmp_path / "run", tiny_models, small_dataset, steps=6, batch_size=2)
    cfg.ckpt_every = 2
    (tmp_path / "cfg.pkl").write_bytes(pickle.dumps(cfg))
    marker = tmp_path / "saving"
    # the child stops inside the save of step 4, after every shard and the metadata are written and before the
    # rename that publishes them; it reports its state in a file, then waits to be killed
    child = f"""
import os, pickle, sys, threading
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
import torch
torch.set_num_threads(1)
publish = os.replace
def replace(src, dst):
    if Path(dst).name == "step_00000004":
        Path({str(marker)!r}).write_text("mid-save")
        threading.Event().wait()
    return publish(src, dst)
os.replace = replace
from datagen.train.train import run
run(pickle.loads(Path({str(tmp_path / "cfg.pkl")!r}).read_bytes()))
"""
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the child never reached the save of step 4"
        time.sleep(0.1)  # polling the child's state file, not ordering a race
    proc.kill()
    proc.wait()
    ckpts = tmp_path / "run" / "checkpoints"
    assert checkpoint.latest(tmp_path / "run") == ckpts / "step_00000002"
    assert any((ckpts / ".step_00000004.tmp").iterdir())  # the half-published save is there, and ignored

    run(cfg, resume=True)
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_00000002", "step_00000004", "step_00000006"]
    straight = tiny_config(tmp_path / "straight", tiny_models, small_dataset, steps=6, batch_size=2)
    run(straight)
    a, b = saved_weights(checkpoint.latest(tmp_path / "straight")), saved_weights(ckpts / "step_00000006")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k  # resumed from step 2 exactly, nothing lost or repeated
