"""edges: Canny edge maps of frames A and B as 8-bit PNGs (0/255) at frame size.

Thresholds come from each image unless fixed in the config: the "auto Canny" rule
lower = (1 - sigma) * median, upper = (1 + sigma) * median of the blurred gray image,
so dark and bright frames get comparable edge density. CPU only; no model to load.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import cv2
import numpy as np

from datagen.media import encode_image
from datagen.vision.frames import decoded_pairs, provenance_json
from schemas.columns import EDGES_A, EDGES_B, provenance_column
from schemas.tasks import ImageKind
from stages.base import Resources, Stage


@dataclass
class EdgesConfig:
    sigma: float = 0.33  # auto-Canny band around the median (the common 0.33 rule)
    low_threshold: float | None = None  # fixed lower threshold; None = derived from the median
    high_threshold: float | None = None  # fixed upper threshold; None = derived from the median
    blur_ksize: int = 5  # Gaussian blur first: suppresses JPEG/sensor noise edges (odd, 0 = off)
    aperture_size: int = 3  # Sobel kernel of Canny (OpenCV default)
    l2_gradient: bool = True  # exact gradient magnitude; slightly cleaner edges than L1
    frames: list[Literal["a", "b"]] = field(default_factory=lambda: ["a", "b"])  # both: tasks use edges of B and of either frame
    # 128: a Canny batch takes ~0.2 s, long enough that Ray's per-batch overhead stays small
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=0.0, batch_size=128))

    def __post_init__(self):
        if self.blur_ksize > 1 and self.blur_ksize % 2 == 0:
            raise ValueError(f"blur_ksize must be odd (or 0 to disable), got {self.blur_ksize}")


def canny_thresholds(gray: np.ndarray, cfg: EdgesConfig) -> tuple[float, float]:
    """(low, high) for this image: fixed ones from the config, else the median rule."""
    median = float(np.median(gray))
    low = cfg.low_threshold if cfg.low_threshold is not None else max(0.0, (1.0 - cfg.sigma) * median)
    high = cfg.high_threshold if cfg.high_threshold is not None else min(255.0, (1.0 + cfg.sigma) * median)
    return low, max(low, high)


def edge_map(frame: np.ndarray, cfg: EdgesConfig) -> np.ndarray:
    """HxWx3 uint8 -> HxW uint8 edges, 0 or 255."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if cfg.blur_ksize > 1:
        gray = cv2.GaussianBlur(gray, (cfg.blur_ksize, cfg.blur_ksize), 0)
    low, high = canny_thresholds(gray, cfg)
    return cv2.Canny(gray, low, high, apertureSize=cfg.aperture_size, L2gradient=cfg.l2_gradient)


class EdgesStage(Stage):
    name: ClassVar[str] = "edges"
    Config = EdgesConfig

    def __init__(self, config: EdgesConfig | None = None):
        self.config = config = config or EdgesConfig()
        params = {k: getattr(config, k) for k in ("sigma", "low_threshold", "high_threshold", "blur_ksize",
                                                  "aperture_size", "l2_gradient")}
        self.provenance = provenance_json("opencv-canny", f"opencv-{cv2.__version__}", params)
        self.columns = [{"a": EDGES_A, "b": EDGES_B}[f] for f in config.frames]

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row, a, b in decoded_pairs(rows, self.name):
            for col in self.columns:
                row[col] = encode_image(edge_map(a if col == EDGES_A else b, self.config), ImageKind.edge)
            row[provenance_column(self.name)] = self.provenance
        return rows
