"""Checkpoints: model, EMA, optimizer, schedule, step and data position in one file, written atomically."""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_state_dict)

_NAME = re.compile(r"step_(\d{8})\.pt")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # plain tensors on CPU, gathered under FSDP


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def latest(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint (temporary files never match the name pattern)."""
    found = sorted(p for p in checkpoint_dir(run_dir).glob("step_*.pt") if _NAME.fullmatch(p.name))
    return found[-1] if found else None


def save(run_dir: str | Path, step: int, model, ema, optimizer, scheduler, extra: dict, keep: int,
         is_main: bool) -> Path:
    """Every rank calls this (FSDP gathers collectively); rank 0 writes a temporary file, then renames it."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=_FULL)
    ema_sd = get_model_state_dict(ema, options=_FULL)
    final = checkpoint_dir(run_dir) / f"step_{step:08d}.pt"
    if is_main:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        torch.save({"step": step, "model": model_sd, "ema": ema_sd, "optimizer": optim_sd,
                    "scheduler": scheduler.state_dict(), **extra}, tmp)
        os.replace(tmp, final)
        for old in sorted(checkpoint_dir(run_dir).glob("step_*.pt"))[:-keep]:
            old.unlink()
    return final


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def restore(ckpt: dict, model, ema, optimizer, scheduler) -> None:
    opts = StateDictOptions(full_state_dict=True)
    set_state_dict(model, optimizer, model_state_dict=ckpt["model"], optim_state_dict=ckpt["optimizer"], options=opts)
    set_model_state_dict(ema, ckpt["ema"], options=opts)
    scheduler.load_state_dict(ckpt["scheduler"])
