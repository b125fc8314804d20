"""safety: drop pairs where either frame shows exposed nudity, by NudeNet's 320n detector.

Real weights inside the `nudenet` wheel (ONNX on the CPU, or the GPU with onnxruntime-gpu);
~15 ms a frame on one CPU core. On by default: a training set must not carry such content,
and the preview is where a user would first see it. Input: IMAGE_A, IMAGE_B.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from datagen.filters.nudity import UNSAFE_CLASSES, NudityDetector
from datagen.vision.frames import decoded_pairs
from stages.base import Resources, Stage, fail


@dataclass
class SafetyConfig:
    # NudeNet reports detections from 0.2; below ~0.5 they are mostly skin-coloured clothing and
    # covered bodies, above it its exposed classes are rarely wrong (recall matters more than a few pairs).
    threshold: float = 0.5
    classes: list[str] = field(default_factory=lambda: list(UNSAFE_CLASSES))  # NudeNet class names that drop a pair
    device: str = "auto"  # auto: CUDA when onnxruntime-gpu is installed, else CPU
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=0.0, batch_size=16, concurrency=1))

    def __post_init__(self):
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be within (0, 1], got {self.threshold}")


class SafetyStage(Stage):
    name: ClassVar[str] = "safety"
    Config = SafetyConfig

    def __init__(self, config: SafetyConfig | None = None):
        self.config = cfg = config or SafetyConfig()
        self.detector = NudityDetector(cfg.device, max(1, int(cfg.resources.num_cpus)))
        unknown = sorted(set(cfg.classes) - set(self.detector.labels))
        if unknown:
            raise ValueError(f"safety.classes: {unknown[0]!r} is not a NudeNet class; known: {', '.join(self.detector.labels)}")
        self.classes = tuple(cfg.classes)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        decoded = list(decoded_pairs(rows, self.name))
        frames = [f for _, a, b in decoded for f in (a, b)]
        worst = self.detector.worst(frames, self.classes) if frames else []
        for k, (row, _, _) in enumerate(decoded):
            for which, (cls, score) in zip("ab", worst[2 * k:2 * k + 2]):
                if score >= self.config.threshold:
                    fail(row, self.name, "unsafe", f"frame {which}: {cls} {score:.2f} (safety.threshold {self.config.threshold})")
                    break
        return rows
