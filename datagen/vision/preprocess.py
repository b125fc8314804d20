"""Model-input preprocessing for SAM2 and Depth Anything, without torchvision.

The transformers processors of both models need torchvision, whose PyPI wheel is a
CUDA build that does not import on CPU torch (FACTS.md). These functions reproduce
what those processors do (resize, rescale, normalise; boxes into model coordinates;
masks back to frame size) with PIL and torch only.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datagen.cutouts import mask_box  # noqa: F401  (one definition, torch-free, shared with assemble)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)  # both models were trained with these
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _normalise(resized: Image.Image) -> np.ndarray:
    x = np.asarray(resized, dtype=np.float32) / 255.0
    return ((x - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def sam2_pixels(frames: list[np.ndarray], size_px: int) -> torch.Tensor:
    """HxWx3 uint8 frames -> (N, 3, size, size) float32: SAM2 squashes to a square, bilinear."""
    out = [_normalise(Image.fromarray(f).resize((size_px, size_px), Image.BILINEAR)) for f in frames]
    return torch.from_numpy(np.stack(out))


def boxes_to_model(boxes_px: np.ndarray, width: int, height: int, size_px: int) -> np.ndarray:
    """(N, 4) x0,y0,x1,y1 boxes in frame pixels -> the same boxes in the square model input."""
    scale = np.array([size_px / width, size_px / height] * 2, dtype=np.float32)
    return boxes_px.astype(np.float32) * scale


def grid_points(per_side: int, size_px: int) -> np.ndarray:
    """(per_side**2, 2) x,y points at cell centres of a regular grid over the model input."""
    centres = (np.arange(per_side, dtype=np.float32) + 0.5) * (size_px / per_side)
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def upsample_logits(logits: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, h, w) mask logits -> (N, height, width) float32 logits, bilinear like SAM's post-processing."""
    return F.interpolate(logits[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def stability_scores(logits: torch.Tensor, threshold: float, offset: float = 1.0) -> torch.Tensor:
    """SAM's stability score: IoU of the masks thresholded at threshold±offset (1 = stable)."""
    inner = (logits > threshold + offset).flatten(1).sum(1).float()
    outer = (logits > threshold - offset).flatten(1).sum(1).float()
    return torch.where(outer > 0, inner / outer.clamp(min=1), torch.zeros_like(outer))


def depth_input_size(width: int, height: int, size_px: int, multiple: int) -> tuple[int, int]:
    """(h, w) the DPT processor resizes to with keep_aspect_ratio: scale as little as possible."""
    scale_h, scale_w = size_px / height, size_px / width
    scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
    return (max(multiple, round(height * scale / multiple) * multiple),
            max(multiple, round(width * scale / multiple) * multiple))


def depth_pixels(frame: np.ndarray, size_hw: tuple[int, int]) -> torch.Tensor:
    """HxWx3 uint8 -> (3, h, w) float32, bicubic as Depth Anything's processor."""
    resized = Image.fromarray(frame).resize((size_hw[1], size_hw[0]), Image.BICUBIC)
    return torch.from_numpy(_normalise(resized))
