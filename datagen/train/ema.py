"""Exponential moving average of the weights, the model `datagen sample` uses."""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of the (unwrapped) model; shard it like the model before training under FSDP."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """ema <- decay * ema + (1 - decay) * model; decay warms up so early weights do not linger (1+s)/(10+s)."""
    d = min(decay, (1 + step) / (10 + step))
    ema_params = list(ema.parameters())
    params = list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError("EMA and model have different parameter lists")
    torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - d)
