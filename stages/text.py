"""text: drop pairs whose frames are mostly text, or whose burned-in text changes from A to B.

Text regions come from RapidOCR's PP-OCRv4 detector (real weights inside the wheel; ONNX
on the CPU, or the GPU with onnxruntime-gpu). Subtitles, tickers and captions that
change between A and B would teach the editor that an "edit" is new text; slides and
title cards are not scenes. Every kept pair gets `text_area_frac` (the larger of A's and
B's text cover) and `text_change_frac` in its facts. Input: IMAGE_A, IMAGE_B, FACTS.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from datagen.filters.text_regions import TextRegionDetector, measure
from datagen.vision.frames import decoded_pairs
from schemas.columns import FACTS
from stages.base import Resources, Stage, fail


@dataclass
class TextConfig:
    # A subtitle line covers ~2-5% of a frame; slides, title cards and stacked tickers cover more.
    max_area: float = 0.15
    # Text in one frame without a counterpart in the other, as a share of the frame: a changed
    # subtitle line is ~2-5%, a static logo or the same line ~0 (a logo missed in one frame < 0.5%).
    max_change: float = 0.005
    match_iou: float = 0.5  # boxes of A and B overlapping this much are the same text (detector jitter is ~0.8-0.9)
    # Largest short side the detector sees (frames are never upscaled): PP-OCR's own 736;
    # 480 costs a third of that and still finds subtitle-sized text.
    detect_short_side_px: int = 736
    box_thresh: float = 0.5  # RapidOCR's default region score: lower finds texture as "text"
    device: str = "auto"  # auto: CUDA when onnxruntime-gpu is installed, else CPU
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=0.0, batch_size=16, concurrency=1))

    def __post_init__(self):
        for name in ("max_area", "max_change"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {getattr(self, name)}")
        if self.detect_short_side_px < 32:
            raise ValueError(f"detect_short_side_px must be >= 32, got {self.detect_short_side_px}")


class TextStage(Stage):
    name: ClassVar[str] = "text"
    Config = TextConfig

    def __init__(self, config: TextConfig | None = None):
        self.config = cfg = config or TextConfig()
        self.detector = TextRegionDetector(cfg.detect_short_side_px, cfg.box_thresh, cfg.device,
                                           max(1, int(cfg.resources.num_cpus)))

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cfg = self.config
        for row, a, b in decoded_pairs(rows, self.name):
            m = measure(self.detector.regions(a), self.detector.regions(b), a.shape[:2], cfg.match_iou)
            area = max(m.area_frac_a, m.area_frac_b)
            facts = json.loads(row.get(FACTS) or "{}")
            facts.update(text_area_frac=round(area, 4), text_change_frac=round(m.change_frac, 4))
            row[FACTS] = json.dumps(facts, sort_keys=True)
            if area > cfg.max_area:
                fail(row, self.name, "text_heavy", f"text covers {area:.1%} of a frame (text.max_area {cfg.max_area:.1%})")
            elif m.change_frac > cfg.max_change:
                fail(row, self.name, "text_changes", f"text regions differ on {m.change_frac:.2%} of the frame "
                                                     f"(text.max_change {cfg.max_change:.2%})")
        return rows
