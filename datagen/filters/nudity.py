"""Exposed-content detections from NudeNet's 320n detector (ONNX, inside the `nudenet` wheel)."""
from __future__ import annotations

import os

import numpy as np

from datagen.filters.onnx import session

# NudeNet's classes that make a frame unusable for training; covered, face, feet, belly,
# armpit and male-breast classes are ordinary video content.
UNSAFE_CLASSES = ("FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED",
                  "BUTTOCKS_EXPOSED", "ANUS_EXPOSED")


class NudityDetector:
    def __init__(self, device: str = "auto", num_threads: int = 1):
        import nudenet

        self.model_path = os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")
        self.detector = nudenet.NudeDetector()
        self.labels: list[str] = list(vars(nudenet.nudenet)["__labels"])  # its class names, in output order
        # The same model under our own session: thread count and execution provider from the stage's config
        self.detector.onnx_session = session(self.model_path, device, num_threads)

    def worst(self, rgb_frames: list[np.ndarray], classes: tuple[str, ...]) -> list[tuple[str, float]]:
        """Per frame, the highest-scoring detection among `classes` as (class, score); ("", 0.0) if none."""
        detections = self.detector.detect_batch([np.ascontiguousarray(f[:, :, ::-1]) for f in rgb_frames],
                                                batch_size=len(rgb_frames) or 1)
        out = []
        for found in detections:
            hits = [(d["class"], float(d["score"])) for d in found if d["class"] in classes]
            out.append(max(hits, key=lambda h: h[1]) if hits else ("", 0.0))
        return out

