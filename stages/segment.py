"""segment: SAM2 masks of the caption's objects on frame A, tracked to frame B.

Per batch, the image encoder (the cost) runs once over all A and B frames together;
per pair, the mask decoder turns the caption's boxes (or, without any, a coarse point
grid filtered by predicted IoU, stability and NMS) into masks on A, and SAM2's video
memory tracks those masks into B, which says whether each object is still visible.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from transformers import Sam2VideoInferenceSession, Sam2VideoModel

from datagen.media import encode_image
from datagen.models.loading import load_for_stage
from datagen.vision import preprocess as pre
from datagen.vision.frames import decoded_pairs, provenance_json
from datagen.vision.sam2_prompts import BadCaption, caption_objects, select_grid_masks
from schemas.columns import CAPTION, MASKS_A, MASKS_B, SEGMENTS, provenance_column
from schemas.tasks import ImageKind
from stages.base import Resources, Stage, fail, failure_reason, split_on_oom


@dataclass
class SegmentConfig:
    model: str = "facebook/sam2.1-hiera-large"  # best masks and tracking of the SAM2.1 family
    revision: str = ""  # hub branch/commit; "" = default branch (the resolved commit is recorded)
    device: str = "auto"  # auto = cuda when present, else cpu
    dtype: str = "auto"  # auto = bfloat16 on GPU, float32 on CPU
    max_objects: int = 8  # assets per pair worth keeping; each costs one decoder+tracking pass
    grid_points_per_side: int = 8  # fallback grid (64 prompts): coarse, salient objects only
    min_pred_iou: float = 0.7  # grid filter on SAM's own IoU estimate (SAM AMG: 0.88 on a dense grid)
    min_stability: float = 0.85  # grid filter: mask barely changes when the logit threshold moves ±1
    nms_iou: float = 0.7  # grid masks overlapping a better one more than this are duplicates (SAM AMG)
    min_area_frac: float = 0.001  # masks under 0.1% of the frame are too small to be assets
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=0.0, batch_size=8))


class SegmentStage(Stage):
    name: ClassVar[str] = "segment"
    model_retries: ClassVar[int] = 2  # a model_error row is tried twice more in the run (1 s, 2 s apart)
    Config = SegmentConfig

    def __init__(self, config: SegmentConfig | None = None):
        self.config = config = config or SegmentConfig()
        self.model, self.device, self.dtype, revision = load_for_stage(Sam2VideoModel, config, self.name)
        self.size_px = int(self.model.config.image_size)
        params = {k: getattr(config, k) for k in ("max_objects", "grid_points_per_side", "min_pred_iou",
                                                  "min_stability", "nms_iou", "min_area_frac")}
        self.provenance = provenance_json(config.model, revision, {**params, "input_px": self.size_px, "dtype": str(self.dtype)})

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ok = []  # (row, objects, frame A, frame B)
        for row, a, b in decoded_pairs(rows, self.name):
            try:
                objects = caption_objects(row.get(CAPTION), a.shape[1], a.shape[0], self.config.max_objects)
            except BadCaption as e:
                fail(row, self.name, "bad_caption", str(e))
                continue
            ok.append((row, objects, a, b))
        if not ok:
            return rows
        try:  # a batch that runs out of memory is split, down to one pair
            errors = split_on_oom(self._segment_batch, ok)
        except Exception as e:  # noqa: BLE001 -- the image encoder failed: every row of the batch is lost
            errors = [e] * len(ok)
        for (row, *_), e in zip(ok, errors):
            if e is not None:
                fail(row, self.name, failure_reason(e, "model_error"), f"{type(e).__name__}: {e}")
        return rows

    def _segment_batch(self, pairs: list[tuple]) -> list[BaseException | None]:
        """Segment `pairs` (row, objects, frame A, frame B): one image-encoder pass over all
        their frames (the cost of this stage), then each pair on its own; a pair's own error
        is its result."""
        with torch.inference_mode():
            pixels = pre.sam2_pixels([f for _, _, a, b in pairs for f in (a, b)], self.size_px)
            pixels = pixels.to(self.device, self.dtype)
            feats = self.model.get_image_features(pixels, return_dict=True)
            errors: list[BaseException | None] = []
            for k, (row, objects, a, _) in enumerate(pairs):
                h, w = a.shape[:2]
                per_frame = [{"vision_feats": [f[:, i:i + 1] for f in feats.fpn_hidden_states],
                              "vision_pos_embeds": [p[:, i:i + 1] for p in feats.fpn_position_encoding]}
                             for i in (2 * k, 2 * k + 1)]
                try:
                    self._segment_pair(row, pixels[2 * k:2 * k + 2], per_frame, objects, h, w)
                    errors.append(None)
                except Exception as e:  # noqa: BLE001 -- one bad pair must not take the batch down
                    errors.append(e)
        return errors

    def _masks_on_a(self, feats_a: dict, objects: list, h: int, w: int):
        """(object ids, names, low-res mask logits, predicted IoU) on frame A, best IoU first for the grid."""
        m = self.model
        flat = list(feats_a["vision_feats"])
        flat[-1] = flat[-1] + m.no_memory_embedding  # what SAM2 adds on a frame without memory
        if objects:
            prompts = {"input_boxes": torch.tensor(
                pre.boxes_to_model(np.array([o[2] for o in objects]), w, h, self.size_px))[:, None]}
        else:
            points = torch.tensor(pre.grid_points(self.config.grid_points_per_side, self.size_px))
            prompts = {"input_points": points[:, None, None], "input_labels": torch.ones(len(points), 1, 1, dtype=torch.int)}
        n = next(iter(prompts.values())).shape[0]
        # One object per batch entry: SAM2's video decoder handles a single object per image.
        embeds = [f.permute(1, 2, 0).reshape(1, -1, *s).expand(n, -1, -1, -1) for f, s in zip(flat, m.backbone_feature_sizes)]
        prompts = {k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype) for k, v in prompts.items()}
        out = m._single_frame_forward(image_embeddings=embeds, multimask_output=False, **prompts)
        logits, iou = out.pred_masks[:, 0].float(), out.iou_scores[:, 0, 0].float()
        if objects:
            ids, names = [o[0] for o in objects], [o[1] for o in objects]
        else:
            keep = select_grid_masks(logits, iou, pre.stability_scores(logits, 0.0), self.config.min_pred_iou,
                                     self.config.min_stability, self.config.nms_iou, self.config.max_objects)
            logits, iou = logits[keep], iou[keep]
            ids, names = list(range(len(keep))), [None] * len(keep)  # salient, but nobody said what it is
        return ids, names, logits, iou

    def _segment_pair(self, row: dict, pixels: torch.Tensor, per_frame: list[dict], objects: list, h: int, w: int) -> None:
        ids, names, logits_a, iou = self._masks_on_a(per_frame[0], objects, h, w)
        masks_a = (pre.upsample_logits(logits_a, h, w) > 0).cpu().numpy()
        keep = [k for k in range(len(ids)) if masks_a[k].sum() >= self.config.min_area_frac * h * w]
        if not keep:  # not a failure: the pair still serves every task that needs no object
            row.update({SEGMENTS: "[]", MASKS_A: [], MASKS_B: [], provenance_column(self.name): self.provenance})
            return
        session = Sam2VideoInferenceSession(video=pixels, video_height=h, video_width=w, inference_device=self.device,
                                            inference_state_device=self.device, video_storage_device=self.device,
                                            dtype=self.dtype, max_vision_features_cache_size=2)
        for i, feats in enumerate(per_frame):
            session.cache.cache_vision_features(i, feats)
        square = pre.upsample_logits(logits_a[keep], self.size_px, self.size_px) > 0
        for k, mask in zip(keep, square):  # frame A's masks are the prompts SAM2 tracks into B
            session.add_mask_inputs(session.obj_id_to_idx(ids[k]), 0, mask[None, None].float())
        session.obj_with_new_inputs = [ids[k] for k in keep]
        self.model(session, frame_idx=0)
        out_b = self.model(session, frame_idx=1)
        slot = {oid: i for i, oid in enumerate(out_b.object_ids)}
        logits_b = out_b.pred_masks[[slot[ids[k]] for k in keep], 0]
        masks_b = (pre.upsample_logits(logits_b, h, w) > 0).cpu().numpy()
        present_b = (out_b.object_score_logits.reshape(-1) > 0).cpu().numpy()
        segments, png_a, png_b = [], [], []
        for n, k in enumerate(keep):
            ma, mb = masks_a[k], masks_b[n]
            segments.append({"object_id": ids[k], "name": names[k], "box_a": pre.mask_box(ma), "box_b": pre.mask_box(mb),
                             "area_a": int(ma.sum()), "area_b": int(mb.sum()), "score": round(float(iou[k]), 4),
                             "visible_b": bool(present_b[slot[ids[k]]] and mb.any())})
            png_a.append(encode_image(ma.astype(np.uint8) * 255, ImageKind.mask))
            png_b.append(encode_image(mb.astype(np.uint8) * 255, ImageKind.mask))
        row.update({SEGMENTS: json.dumps(segments), MASKS_A: png_a, MASKS_B: png_b,
                    provenance_column(self.name): self.provenance})
