"""Flow matching (rectified flow), the objective and the sampler's ODE.

Convention (pinned by tests/train/test_flow.py): t = 0 is data, t = 1 is pure noise,
    x_t = (1 - t) * x_0 + t * noise,
and the model predicts the velocity dx_t/dt = noise - x_0. Sampling integrates from t = 1 down to 0.
Timesteps are drawn logit-normal (SD3): most training signal in the middle of the path.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FlowConfig:
    logit_mean: float = 0.0  # SD3's logit-normal(0, 1): the best of their timestep-sampling ablation
    logit_std: float = 1.0
    text_drop: float = 0.1  # classifier-free guidance: drop base + context text for this share of samples
    context_drop: float = 0.2  # drop only the context prompt: sampling often has no context text
    image_drop: float = 0.1  # drop every conditioning frame (InstructPix2Pix-style image guidance)


def sample_t(n: int, cfg: FlowConfig, generator: torch.Generator, device) -> torch.Tensor:
    z = torch.randn(n, generator=generator, device=device) * cfg.logit_std + cfg.logit_mean
    return torch.sigmoid(z)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for t broadcast over the trailing dims of x0."""
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise


def velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The regression target: d x_t / d t."""
    return noise - x0


def timesteps(steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """steps+1 times from 1 (noise) to 0 (data); shift > 1 spends more steps near noise (SD3 resolution shift)."""
    t = torch.linspace(1.0, 0.0, steps + 1, device=device)
    return shift * t / (1 + (shift - 1) * t)


def euler_step(x_t: torch.Tensor, v: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    return x_t + (t_next - t) * v
