"""Which conditions a sample keeps: guidance dropout in training, the unconditional branches of sampling.

Two text layouts (`data.text_padding`), each with its own way to drop a condition:
- attend: prompts have fixed lengths and attention sees every token; a dropped prompt becomes the empty
  prompt's encoding (SD3) and dropped condition frames become zero latents (InstructPix2Pix). No token
  leaves the sequence, so a batch of one frame count has no padding and attention takes no mask.
- mask: prompts padded to the batch's longest; padding, dropped prompts and dropped frames are masked out.
"""
from __future__ import annotations

import torch

MODEL_KEYS = ("task", "frame_role", "frame_cond", "frame_valid", "text", "text_mask", "text_segment")


def model_kwargs(inputs: dict, latents: torch.Tensor, drop_text: torch.Tensor, drop_context: torch.Tensor,
                 drop_images: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """(the model's keyword inputs, latents) with the dropped conditions removed.

    `drop_*` are CPU bool [B] (drawn on the CPU, so deciding whether a mask is needed never syncs the GPU)."""
    dev = latents.device
    kw = {k: inputs[k] for k in MODEL_KEYS}
    d_text, d_context, d_images = (d.to(dev, non_blocking=True) for d in (drop_text, drop_context, drop_images))
    is_context = inputs["text_segment"] == 1
    gone_text = d_text[:, None] | (d_context[:, None] & is_context)
    gone_frames = d_images[:, None] & inputs["frame_cond"]
    has_padding = inputs["has_padding"]
    if "null_text" in inputs:
        kw["text"] = torch.where(gone_text[..., None], inputs["null_text"].to(inputs["text"].dtype), inputs["text"])
        latents = latents.masked_fill(gone_frames[:, :, None, None, None], 0.0)
    else:
        kw["text_mask"] = inputs["text_mask"] & ~gone_text
        kw["frame_valid"] = inputs["frame_valid"] & ~gone_frames
        has_padding = has_padding or bool(drop_text.any() or drop_context.any() or drop_images.any())
    kw["has_padding"] = has_padding
    return kw, latents
