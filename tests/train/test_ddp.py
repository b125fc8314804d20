"""Two CPU processes (gloo) under DDP stay in sync; FSDP, paused and resumed, trains to the same weights."""

import pytest
import torch
import torch.multiprocessing as mp

from datagen.train import checkpoint
from tests.conftest import free_port
from tests.train.conftest import tiny_config


def _worker(rank: int, world: int, port: int, cfg, out_dir, resume: bool, stop_at) -> None:
    import os

    from datagen.train.train import run

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model = run(cfg, resume=resume, stop_at=stop_at)
    if cfg.parallel == "ddp":
        torch.save(model.state_dict(), f"{out_dir}/rank{rank}.pt")


def _launch(cfg, out_dir, resume: bool = False, stop_at=None) -> None:
    mp.spawn(_worker, args=(2, free_port(), cfg, str(out_dir), resume, stop_at), nprocs=2, join=True)


@pytest.mark.slow
def test_ddp_ranks_stay_in_sync_and_fsdp_agrees(tmp_path, tiny_models, small_dataset):
    ddp = tiny_config(tmp_path / "ddp", tiny_models, small_dataset, steps=4, batch_size=2)
    _launch(ddp, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # gradients were averaged: replicas identical
    saved = checkpoint.load(checkpoint.latest(tmp_path / "ddp"))["model"]
    assert all(torch.equal(saved[k], r0[k]) for k in r0)
    assert saved["out.weight"].abs().sum() > 0  # trained: the zero-initialised output layer moved

    # FSDP, paused at step 2 and resumed (sharded state gathered into the checkpoint and scattered back),
    # must land on the DDP weights: same data, same noise, same arithmetic up to reduction order
    fsdp = tiny_config(tmp_path / "fsdp", tiny_models, small_dataset, steps=4, batch_size=2, parallel="fsdp")
    _launch(fsdp, tmp_path, stop_at=2)
    _launch(fsdp, tmp_path, resume=True)
    sharded = checkpoint.load(checkpoint.latest(tmp_path / "fsdp"))
    for part in ("model", "ema"):
        ref = checkpoint.load(checkpoint.latest(tmp_path / "ddp"))[part]
        for k in ref:
            assert torch.allclose(sharded[part][k], ref[k], atol=1e-5), (part, k)
