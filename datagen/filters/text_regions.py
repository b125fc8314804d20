"""Text regions of a frame from RapidOCR's detector (PP-OCRv4 det, ONNX, inside the wheel).

Only the detector runs: the filter needs where text is, not what it says, and detection
is a fraction of a full OCR pass. A region is a quadrilateral; the frame's text mask is
their filled union, so overlapping boxes are not counted twice.
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
    change_frac: float  # share of the frame covered by text in exactly one of A and B


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
        self.model_path = str(det_cfg["model_path"])
        self.detector = TextDetector(det_cfg)
        # The same model under our own session: thread count and execution provider from the stage's config
        self.detector.infer.session = session(self.model_path, device, num_threads)

    def mask(self, rgb: np.ndarray) -> np.ndarray:
        """Boolean HxW mask of the text regions in an HxWx3 RGB frame."""
        boxes, _ = self.detector(np.ascontiguousarray(rgb[:, :, ::-1]))  # PP-OCR takes BGR
        mask = np.zeros(rgb.shape[:2], np.uint8)
        if boxes is not None and len(boxes):
            cv2.fillPoly(mask, [np.round(b).astype(np.int32) for b in boxes], 1)
        return mask.astype(bool)


def measure(mask_a: np.ndarray, mask_b: np.ndarray) -> TextMeasures:
    px = float(mask_a.size)
    return TextMeasures(float(mask_a.sum()) / px, float(mask_b.sum()) / px, float((mask_a ^ mask_b).sum()) / px)
