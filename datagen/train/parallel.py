"""Process groups and model wrapping: one process per GPU under torchrun; DDP, or FSDP2 for big models."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> Dist:
    """Join torchrun's process group when launched by it (WORLD_SIZE set), else a single process."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank, local_rank = int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return Dist(rank, world, local_rank, dev)


def wrap(model: nn.Module, ema: nn.Module, mode: str, d: Dist,
         compute_dtype: torch.dtype | None = None) -> tuple[nn.Module, nn.Module]:
    """DDP replicates (gradients all-reduced); FSDP shards each block and the root, the EMA alike.

    Under FSDP with a `compute_dtype` (bf16), parameters are all-gathered and gradients reduce-scattered in
    that dtype (half the bytes on the wire), while the sharded parameters and the optimizer stay fp32
    (the master weights). The EMA is gathered in fp32: it is what sampling and checkpoints keep.
    """
    if d.world == 1 and not dist.is_initialized():  # a process group of one (bench/train.py's baseline) is wrapped
        return model, ema
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=compute_dtype)
        for m, mp in ((model, policy), (ema, MixedPrecisionPolicy())):
            for blk in m.blocks:
                fully_shard(blk, mp_policy=mp)
            fully_shard(m, mp_policy=mp)
        return model, ema
    ids = [d.local_rank] if d.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids), ema


def grad_sync(model: nn.Module, enabled: bool):
    """Context of one micro-batch's forward and backward: gradients are reduced across ranks only when
    `enabled` (the last micro-batch of an accumulated step), otherwise they accumulate locally."""
    if enabled:
        return contextlib.nullcontext()
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        return _fsdp_no_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
