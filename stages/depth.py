"""depth: Depth Anything relative depth of frames A and B as 16-bit PNGs at frame size.

Frames are resized as Depth Anything's processor does (keep aspect, multiple of 14),
grouped by input shape so each group runs as one forward pass, resized back to the
frame size (bicubic), and min-max normalised per frame to 0..65535. The output is
relative inverse depth (near = bright), as the model predicts; the provenance says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DepthAnythingForDepthEstimation

from datagen.media import encode_image
from datagen.models.loading import load_for_stage
from datagen.vision import preprocess as pre
from datagen.vision.frames import decoded_pairs, provenance_json
from schemas.columns import DEPTH_A, DEPTH_B, provenance_column
from schemas.tasks import ImageKind
from stages.base import Resources, Stage, fail, failure_reason, pixel_batches, split_on_oom

NORMALISATION = {  # recorded in provenance: how the stored 16-bit values relate to the model output
    "quantity": "relative_inverse_depth",  # Depth Anything predicts affine-invariant disparity
    "scaling": "per_frame_minmax",  # 0 = farthest pixel of the frame, 65535 = nearest
    "range": [0, 65535],
}


@dataclass
class DepthConfig:
    model: str = "depth-anything/Depth-Anything-V2-Large-hf"  # sharpest V2 relative-depth model
    revision: str = ""  # hub branch/commit; "" = default branch (the resolved commit is recorded)
    device: str = "auto"  # auto = cuda when present, else cpu
    dtype: str = "auto"  # auto = bfloat16 on GPU, float32 on CPU
    input_px: int = 518  # the checkpoints' processor size (37 patches of 14 px)
    patch_px: int = 14  # DINOv2 patch size: input sides must be multiples of it
    frames: list[Literal["a", "b"]] = field(default_factory=lambda: ["a", "b"])  # both: tasks use depth of B and of either frame
    # Input pixels per forward pass (16 frames at 518x518): activations grow with pixels, not
    # frames. A pass that still runs out of memory is split in halves, down to one frame.
    max_batch_pixels: int = 16 * 518 * 518
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=0.0, batch_size=16))


class DepthStage(Stage):
    name: ClassVar[str] = "depth"
    model_retries: ClassVar[int] = 2  # a model_error row is tried twice more in the run (1 s, 2 s apart)
    Config = DepthConfig

    def __init__(self, config: DepthConfig | None = None):
        self.config = config = config or DepthConfig()
        self.model, self.device, self.dtype, revision = load_for_stage(DepthAnythingForDepthEstimation, config, self.name)
        params = {**NORMALISATION, "input_px": config.input_px, "resize_back": "bicubic", "dtype": str(self.dtype)}
        self.provenance = provenance_json(config.model, revision, params)
        self.columns = [{"a": DEPTH_A, "b": DEPTH_B}[f] for f in config.frames]

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        jobs = []  # (row, output column, frame)
        for row, a, b in decoded_pairs(rows, self.name):
            jobs += [(row, col, a if col == DEPTH_A else b) for col in self.columns]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (_, _, frame) in enumerate(jobs):
            size = pre.depth_input_size(frame.shape[1], frame.shape[0], self.config.input_px, self.config.patch_px)
            groups.setdefault(size, []).append(i)
        for size, idx in groups.items():
            try:
                depths = self._predict([jobs[i][2] for i in idx], size)
            except Exception as e:  # noqa: BLE001 -- a failing group is recorded, not raised
                for i in idx:
                    fail(jobs[i][0], self.name, failure_reason(e, "model_error"), f"{type(e).__name__}: {e}")
                continue
            for i, depth in zip(idx, depths):
                row, col, _ = jobs[i]
                if isinstance(depth, BaseException):
                    fail(row, self.name, "out_of_memory", f"{col}: alone in its batch: {type(depth).__name__}: {depth}")
                elif not np.isfinite(depth).all():
                    fail(row, self.name, "bad_output", f"{col}: depth prediction has non-finite values")
                else:
                    row[col] = encode_image(_to_uint16(depth), ImageKind.depth16)
        for row in rows:
            if row.get("failed_stage") is None:
                row[provenance_column(self.name)] = self.provenance
        return rows

    def _predict(self, frames: list[np.ndarray], size_hw: tuple[int, int]) -> list[np.ndarray | BaseException]:
        """Float32 depth at each frame's own size (or the out-of-memory error of a frame that
        did not fit alone), at most `max_batch_pixels` input pixels per forward pass."""
        per_frame_px = size_hw[0] * size_hw[1]
        out: list[np.ndarray | BaseException] = []
        for chunk in pixel_batches([per_frame_px] * len(frames), self.config.max_batch_pixels, len(frames)):
            out += split_on_oom(lambda batch: self._forward(batch, size_hw), [frames[i] for i in chunk])
        return out

    def _forward(self, frames: list[np.ndarray], size_hw: tuple[int, int]) -> list[np.ndarray]:
        pixels = torch.stack([pre.depth_pixels(f, size_hw) for f in frames]).to(self.device, self.dtype)
        with torch.inference_mode():
            pred = self.model(pixel_values=pixels).predicted_depth.float()
        return [F.interpolate(d[None, None], size=f.shape[:2], mode="bicubic", align_corners=False)[0, 0].cpu().numpy()
                for f, d in zip(frames, pred)]


def _to_uint16(depth: np.ndarray) -> np.ndarray:
    """Min-max normalise one frame's depth to 0..65535 (a constant frame maps to 0)."""
    lo, hi = float(depth.min()), float(depth.max())
    scaled = (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)
    return np.round(scaled * 65535.0).astype(np.uint16)
