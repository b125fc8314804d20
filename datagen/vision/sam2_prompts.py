"""Which objects SAM2 segments: boxes from the caption, or a filtered point-grid fallback."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch


class BadCaption(ValueError):
    """The caption column holds something that is not the caption stage's JSON."""


def caption_objects(caption: Any, width: int, height: int, max_objects: int) -> list[tuple[int, str, list[float]]]:
    """(object_id, name, box clipped to the frame) for the caption's usable boxes, in caption order.

    object_id is the object's index in the caption, so labels can be traced back to it.
    Missing or empty captions give []; so do boxes that are degenerate after clipping.
    """
    if caption is None or caption == "":
        return []
    try:
        parsed = json.loads(caption) if isinstance(caption, (str, bytes)) else caption
        objects = parsed.get("objects") or []
    except (ValueError, AttributeError) as e:
        raise BadCaption(f"caption is not a JSON object: {e}") from None
    out = []
    for i, obj in enumerate(objects):
        box = obj.get("box") if isinstance(obj, dict) else None
        if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            continue
        x0, x1 = sorted(float(np.clip(v, 0, width)) for v in (box[0], box[2]))
        y0, y1 = sorted(float(np.clip(v, 0, height)) for v in (box[1], box[3]))
        if x1 - x0 >= 2 and y1 - y0 >= 2:  # a box under 2 px carries no extent for SAM to use
            out.append((i, str(obj.get("name") or f"object {i}"), [x0, y0, x1, y1]))
        if len(out) == max_objects:
            break
    return out


def select_grid_masks(logits: torch.Tensor, iou: torch.Tensor, stability: torch.Tensor, min_iou: float,
                      min_stability: float, nms_iou: float, max_objects: int) -> list[int]:
    """Indices of grid masks that pass the quality filters, best predicted IoU first, after mask NMS."""
    order = [int(i) for i in torch.argsort(iou, descending=True) if iou[i] >= min_iou and stability[i] >= min_stability]
    masks = (logits > 0).flatten(1)
    kept: list[int] = []
    for i in order:
        if not masks[i].any():
            continue
        inter = (masks[kept] & masks[i]).sum(1).float() if kept else torch.zeros(0)
        union = (masks[kept] | masks[i]).sum(1).float() if kept else torch.ones(0)
        if kept and bool((inter / union.clamp(min=1) > nms_iou).any()):
            continue
        kept.append(i)
        if len(kept) == max_objects:
            break
    return kept
