"""pairs: video rows (after shots) -> one row per frame pair, or one `no_pairs` failure row.

Pairs are chosen on the scan's small analysis images (datagen/video/pairing.py); the
chosen frames come from the scan's sample-quality copies (already at the configured size),
or, past the scan's memory bound, are decoded again; then rotated upright and encoded once. Every measured fact (gap, flow, camera-motion class, object
motion, blur, brightness, shot span) goes to `facts_json` for the context prompt.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import cv2
import numpy as np

from datagen.media import encode_image
from datagen.video.decode import KeptFrame, decode_frames, fit_size, sample_rgb
from datagen.video.pairing import PairingConfig, choose_pairs
from datagen.video.probe import ProbeInfo, VideoError, local_path
from datagen.video.windows import Window
from schemas.columns import (FACTS, FRAME_A, FRAME_B, HEIGHT, IMAGE_A, IMAGE_B, PAIR, SHOT, T_A_S, T_B_S, VIDEO_URI,
                             WIDTH)
from schemas.tasks import ImageKind
from stages.base import Resources, Stage, fail, failure_reason
from stages.ingest import FRAME_TABLE, PROBE, WINDOW
from stages.shots import SCAN, SHOTS, load_shots

# Heavy per-video columns that pair rows do not need downstream.
DROPPED = (FRAME_TABLE, SCAN)


@dataclass
class PairsConfig:
    pairing: PairingConfig = field(default_factory=PairingConfig)
    short_side_px: int = 512  # the trainer's base resolution; larger frames are downscaled, never upscaled
    max_long_side_px: int = 1024  # caps ultra-wide frames at 2:1 of the short side
    image_format: Literal["jpg", "png"] = "jpg"  # JPEG: ~10x smaller shards; PNG when lossless targets matter
    jpeg_quality: int = 92  # visually lossless for training targets, ~2x smaller than 100
    # pyav: the scan's kept copies; frames past its memory bound are decoded again (one seek per
    # GOP, frames named by timestamp) to the same pixels. decord: every chosen frame is decoded by
    # index instead (kept copies unused, scaled by OpenCV); its indices drift by one after a
    # packet that yields no picture (box.mp4), so it is not the default
    decoder: Literal["pyav", "decord"] = "pyav"
    storage_options: dict[str, Any] = field(default_factory=dict)
    opencv_threads: int = 1  # Ray runs a worker per CPU; OpenCV's own thread pool would only add contention
    # one video per batch: converting and encoding ~2-32 frames takes ~0.05-0.5 s
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, batch_size=1))


class PairsStage(Stage):
    name: ClassVar[str] = "pairs"
    Config = PairsConfig

    def __init__(self, config: PairsConfig | None = None):
        self.config = config or PairsConfig()
        cv2.setNumThreads(self.config.opencv_threads)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for row in rows:
            out.extend(self._one(row))
        return out

    def _one(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        cfg = self.config
        base = {k: v for k, v in row.items() if k not in DROPPED and k != SHOTS}
        try:
            info = ProbeInfo.from_columns(row[PROBE], row[FRAME_TABLE])
            shots, grid_index, grid_images, kept = load_shots(row)
            times = info.times_s
            broken: list[dict] = []
            pairing = cfg.pairing
            window = Window.from_row(row.get(WINDOW))
            if window:  # a long video's window: its share of the per-video cap, so pairs span the whole video
                pairing = dataclasses.replace(pairing, max_pairs_per_video=window.pair_cap(pairing.max_pairs_per_video,
                                                                                           len(times)))
            chosen, why = choose_pairs(shots, grid_index, grid_images, times, pairing, rejected=broken)
            if not chosen:
                detail = (f"{len(shots.shots)} shot(s), {len(grid_index)} candidate frames; rejected: "
                          + (", ".join(f"{k}={v}" for k, v in why.most_common()) or "nothing to try"))
                if broken:  # say where the content jumped, so a user can check the video there
                    worst = max(broken, key=lambda r: r["continuity_frame_change"])
                    detail += (f"; discontinuous: frames {worst['frame_a']}-{worst['frame_b']} break at frame "
                               f"{worst['break_frame']} (frame change {worst['continuity_frame_change']}, "
                               f"step warp error {worst['continuity_step_warp_error']})")
                return [fail(base, self.name, "no_pairs", detail)]
            detector = json.loads(row[SHOTS]).get("detector", {"model": "builtin"})
            wanted = sorted({i for p in chosen for i in (p.frame_a, p.frame_b)})
            frames = self._kept_frames(info, kept, wanted)
            missing = [i for i in wanted if i not in frames]
            if missing:
                with local_path(str(row[VIDEO_URI]), **cfg.storage_options) as path:
                    frames.update(decode_frames(path, info, missing, cfg.short_side_px, cfg.max_long_side_px,
                                                cfg.decoder, skip_nonref=json.loads(row[SHOTS]).get("skip_nonref", False)))
        except VideoError as e:
            return [fail(base, self.name, e.reason, e.detail)]
        except Exception as e:  # never end the run on one video
            return [fail(base, self.name, failure_reason(e, "pairs_error"), f"{type(e).__name__}: {e}")]
        encoded = {i: encode_image(f, ImageKind.rgb, cfg.image_format, cfg.jpeg_quality) for i, f in frames.items()}
        out = []
        for p in chosen:
            height, width = frames[p.frame_a].shape[:2]
            facts = dict(p.facts, frame_a=p.frame_a, frame_b=p.frame_b, fps=info.fps, vfr=info.vfr,
                         shot_detector=detector,
                         rotation_deg=info.rotation_deg, source_width=info.width, source_height=info.height)
            out.append(dict(base, **{
                SHOT: p.shot, PAIR: p.pair, FRAME_A: p.frame_a, FRAME_B: p.frame_b,
                T_A_S: round(float(times[p.frame_a]), 4), T_B_S: round(float(times[p.frame_b]), 4),
                IMAGE_A: encoded[p.frame_a], IMAGE_B: encoded[p.frame_b], WIDTH: width, HEIGHT: height,
                FACTS: json.dumps(facts, sort_keys=True),
            }))
        return out

    def _kept_frames(self, info: ProbeInfo, kept: dict[int, KeptFrame], wanted: list[int]) -> dict[int, np.ndarray]:
        """The wanted frames the scan kept, when it kept them at this stage's size (the rest are decoded)."""
        if self.config.decoder != "pyav":  # decord's frames are scaled differently: do not mix the two
            return {}
        size = fit_size(info.width, info.height, self.config.short_side_px, self.config.max_long_side_px)
        return {i: sample_rgb(kept[i], info.rotation_deg) for i in wanted if i in kept and kept[i].size == size}
