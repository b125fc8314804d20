"""Frame B's masks are SAM2's video propagation of frame A's masks (a reference check).

No offline weights can segment a square, so this pins the wiring instead: the stage's
shortcuts (one batched image encoder pass, features put in the session's cache by hand,
A's masks decoded from box prompts) must give the very masks on B that a plain SAM2 video
session computes from the same A mask on its own, and B must depend on that A mask.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from transformers import Sam2VideoInferenceSession

from datagen.media import decode_image
from datagen.vision import preprocess as pre
from schemas.columns import MASKS_B, SEGMENTS
from schemas.tasks import ImageKind
from stages.segment import SegmentConfig, SegmentStage
from tests.stages.vision_inputs import batch, frame_pair, pair_row, tiny_sam2_dir  # noqa: F401 -- fixture

def _reference_b(stage: SegmentStage, a: np.ndarray, b: np.ndarray, mask_a: torch.Tensor) -> np.ndarray:
    """B's mask from a fresh session that encodes both frames itself, prompted with `mask_a` on A."""
    h, w = a.shape[:2]
    pixels = pre.sam2_pixels([a, b], stage.size_px)
    session = Sam2VideoInferenceSession(video=pixels, video_height=h, video_width=w, dtype=torch.float32)
    session.add_mask_inputs(session.obj_id_to_idx(0), 0, mask_a[None, None].float())
    session.obj_with_new_inputs = [0]
    with torch.inference_mode():
        stage.model(session, frame_idx=0)
        logits = stage.model(session, frame_idx=1).pred_masks[:, 0]
    return (pre.upsample_logits(logits, h, w) > 0).numpy()[0]


def test_mask_on_b_is_the_propagation_of_the_mask_on_a(tiny_sam2_dir, monkeypatch):
    stage = SegmentStage(SegmentConfig(model=tiny_sam2_dir, min_pred_iou=0.0, min_stability=0.0, min_area_frac=0.0))
    prompts = []
    real_add = Sam2VideoInferenceSession.add_mask_inputs
    monkeypatch.setattr(Sam2VideoInferenceSession, "add_mask_inputs",
                        lambda self, idx, frame, mask: (prompts.append(mask[0, 0].clone()), real_add(self, idx, frame, mask)))
    caption = json.dumps({"objects": [{"name": "square", "box": [8, 8, 32, 32]}]})
    out = stage(batch([pair_row(64, 48, caption=caption)]))
    monkeypatch.setattr(Sam2VideoInferenceSession, "add_mask_inputs", real_add)
    assert len(prompts) == 1 and json.loads(out[SEGMENTS][0])[0]["name"] == "square"
    mask_b = decode_image(out[MASKS_B][0][0], ImageKind.mask) > 0
    a, b = frame_pair(64, 48, seed=0)  # the frames pair_row encodes (PNG: lossless)
    assert (_reference_b(stage, a, b, prompts[0]) == mask_b).mean() > 0.99
    # B follows A's mask: prompting A with its complement changes B (random weights use
    # their memory weakly, ~1% of B's pixels; real ones carry the object over)
    assert (_reference_b(stage, a, b, 1 - prompts[0]) != mask_b).any()
