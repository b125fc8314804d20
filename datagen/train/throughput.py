"""Honest throughput: step time and data wait measured apart, FLOPs counted from the tokens actually fed.

MFU = model FLOPs (6 x matmul params x tokens + attention; recomputation by gradient checkpointing and the
frozen encoders not counted) / (elapsed x devices x the device's dense bf16 peak).
"""
from __future__ import annotations

import time

import torch

# dense (no sparsity) bf16 tensor-core peak per device, from the vendors' datasheets
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12,
                   "A10G": 70e12, "L4": 121e12, "B200": 2250e12}


def device_peak_flops(device: torch.device) -> float | None:
    """The table's peak for this GPU, or None (CPU, unknown GPU): MFU is then not reported."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):  # "GH200" before "H200"
        if key in name:
            return PEAK_BF16_FLOPS[key]
    return None


class Meter:
    """Accumulates steps, tokens, FLOPs and data-wait seconds between two reports."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, device_peak_flops(device)
        self.reset()

    def reset(self) -> None:
        self.start, self.steps, self.tokens, self.flops, self.wait_s = time.perf_counter(), 0, 0.0, 0.0, 0.0

    def waited(self, seconds: float) -> None:
        self.wait_s += seconds

    def step(self, tokens: float, flops: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.flops += flops

    def report(self, world: int = 1) -> dict:
        """Figures since the last report (tokens and FLOPs of this rank scaled by `world`); then reset."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # queued kernels belong to this interval
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        out = {"steps_per_s": self.steps / elapsed, "tokens_per_s": self.tokens * world / elapsed,
               "tflops_per_s_per_device": self.flops / elapsed / 1e12, "data_wait_share": self.wait_s / elapsed,
               "step_s": (elapsed - self.wait_s) / max(self.steps, 1)}
        out["mfu"] = self.flops / elapsed / self.peak if self.peak else None
        self.reset()
        return out


def batch_flops(per_token: tuple[float, float], attention_flops, text_mask: torch.Tensor, frame_valid: torch.Tensor,
                tokens_per_frame: int) -> tuple[float, float]:
    """(non-padding tokens, training FLOPs) of one batch; masks on the CPU, so no device sync.

    `per_token`: FLOPs of one (text, image) token; `attention_flops(sum of squared sequence lengths)`."""
    text = text_mask.sum(1).double()
    image = frame_valid.sum(1).double() * tokens_per_frame
    seq = text + image
    flops = per_token[0] * text.sum() + per_token[1] * image.sum() + attention_flops(float((seq * seq).sum()))
    return float(seq.sum()), float(flops)
