"""Text regions of a frame from RapidOCR's detector (PP-OCRv4 det, ONNX, inside the wheel).

Only the detector runs: the filter needs where text is, not what it says, and detection
is a fraction of a full OCR pass. A region is a quadrilateral; a frame's text area is
the filled union of its regions, so overlapping boxes are not counted twice. Text
"changes" where a region of one frame has no counterpart at about the same place in the
other (box IoU below `match_iou`): a new subtitle line is a box of another extent, a
static logo or the same subtitle line matches itself despite the detector's jitter.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datagen.filters.onnx import session


@dataclass(frozen=True)
class TextMeasures:
    area_frac_a: float  # share of frame A covered by text regions
    area_frac_b: float
    change_frac: float  # share of the frame covered by regions of A or B without a counterpart in the other


class TextRegionDetector:
    def __init__(self, short_side_px: int, box_thresh: float, device: str = "auto", num_threads: int = 1):
        try:
            from rapidocr_onnxruntime.ch_ppocr_det import TextDetector
            from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH
            from rapidocr_onnxruntime.utils import read_yaml, update_model_path
        except ImportError as e:
            from datagen import UserError

            raise UserError(f"the text filter needs RapidOCR ({e}): pip install --no-deps rapidocr-onnxruntime "
                            "(its dependencies come with datagen); or drop 'text' from the config's filters") from None

        det_cfg = update_model_path(read_yaml(str(DEFAULT_CFG_PATH)))["Det"]
        det_cfg.update(limit_side_len=short_side_px, limit_type="min", box_thresh=box_thresh)
        self.short_side_px = short_side_px
        self.model_path = str(det_cfg["model_path"])
        self.detector = TextDetector(det_cfg)
        # The same model under our own session: thread count and execution provider from the stage's config
        self.detector.infer.session = session(self.model_path, device, num_threads)

    def regions(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Text regions of an HxWx3 RGB frame, each a 4x2 int32 quadrilateral in its pixels."""
        # Never upscale: an enlarged small frame shows the detector text-like texture, not more text
        self.detector.limit_side_len = min(self.short_side_px, min(rgb.shape[:2]))
        boxes, _ = self.detector(np.ascontiguousarray(rgb[:, :, ::-1]))  # PP-OCR takes BGR
        return [] if boxes is None else [np.round(b).astype(np.int32) for b in boxes]


def _mask(regions: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    if regions:
        cv2.fillPoly(mask, regions, 1)
    return mask.astype(bool)


def _iou(p: np.ndarray, q: np.ndarray) -> float:
    (px0, py0), (px1, py1) = p.min(0), p.max(0)
    (qx0, qy0), (qx1, qy1) = q.min(0), q.max(0)
    inter = max(0, min(px1, qx1) - max(px0, qx0)) * max(0, min(py1, qy1) - max(py0, qy0))
    union = (px1 - px0) * (py1 - py0) + (qx1 - qx0) * (qy1 - qy0) - inter
    return inter / union if union > 0 else 0.0


def measure(regions_a: list[np.ndarray], regions_b: list[np.ndarray], shape: tuple[int, int],
            match_iou: float = 0.5) -> TextMeasures:
    px = float(shape[0] * shape[1])
    unmatched = [r for r in regions_a if not any(_iou(r, q) >= match_iou for q in regions_b)]
    unmatched += [q for q in regions_b if not any(_iou(q, r) >= match_iou for r in regions_a)]
    return TextMeasures(_mask(regions_a, shape).sum() / px, _mask(regions_b, shape).sum() / px,
                        _mask(unmatched, shape).sum() / px)
