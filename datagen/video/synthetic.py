"""Synthetic videos with known ground truth (cuts, static shot, pan, zoom, shake, moving object, flash, fade).

Used by the tests and by bench/pairs.py. Every clip is made of `Segment`s; each segment
starts a new shot (a hard cut) unless it is a `flash` (one white frame inside a shot).
Textures are smooth random noise with a distinct seed per segment, so cuts are strong,
flow is well defined and a still image is really still after encoding.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


@dataclass
class Segment:
    kind: str  # static | pan | object | zoom | shake | black
    frames: int
    speed_px: float = 4.0  # pan / object speed per frame, in output pixels; shake: amplitude; zoom: per mille a frame
    object_frac: float = 1 / 3  # object: its side as a share of the frame height
    seed: int = 0
    fade_in: int = 0  # the first `fade_in` frames ramp up from black
    flash_at: int | None = None  # offset of one all-white frame inside the segment
    shake: np.ndarray | None = None  # shake: per-frame (dx, dy) offsets, drawn from `seed`


@dataclass
class Truth:
    """Ground truth of a generated clip, in frame indices of the written stream."""

    path: str
    num_frames: int
    fps: float
    cuts: list[int] = field(default_factory=list)  # first frame of every shot but the first
    segments: list[tuple[str, int, int]] = field(default_factory=list)  # (kind, start, end exclusive)
    flash_frames: list[int] = field(default_factory=list)
    black_frames: list[int] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth colourful random texture with edges at several scales (good for flow and blur tests)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for scale in (4, 16, 48):
        small = rng.random((h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        img += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w] / 3
    for _ in range(40):  # rectangles give hard edges at every position
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        c = rng.random(3).tolist()
        cv2.rectangle(img, (x, y), (x + int(rng.integers(8, 40)), y + int(rng.integers(8, 40))), c, -1)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def _segment_frames(seg: Segment, w: int, h: int):
    if seg.kind == "black":
        for _ in range(seg.frames):
            yield np.zeros((h, w, 3), np.uint8)
        return
    margin = int(abs(seg.speed_px) * seg.frames) + 8 if seg.kind == "pan" else 16
    big = texture(h + 16, w + margin + 16, seg.seed)
    bg = np.ascontiguousarray(big[8:8 + h, 8:8 + w])
    side = int(h * seg.object_frac)
    obj = texture(side, side, seg.seed + 1000)
    if seg.kind == "shake":  # a handheld camera: a sway of ~1 s and ~1.7 s periods (+-speed_px), 1 px of jitter
        rng = np.random.default_rng(seg.seed)
        t = np.arange(seg.frames) / 24.0
        phase = rng.uniform(0, 2 * np.pi, 2)
        sway = np.stack([np.sin(2 * np.pi * t / 1.1 + phase[0]), 0.6 * np.sin(2 * np.pi * t / 1.7 + phase[1])], 1)
        offsets = sway * seg.speed_px + rng.normal(0, 0.5, (seg.frames, 2))
        seg = dataclasses.replace(seg, shake=np.clip(offsets, -7, 7).round().astype(int))
    for i in range(seg.frames):
        if i == seg.flash_at:
            yield np.full((h, w, 3), 255, np.uint8)
            continue
        frame = _content(seg, i, big, bg, obj, w, h)
        if i < seg.fade_in:
            frame = (frame.astype(np.float32) * (i / seg.fade_in)).astype(np.uint8)
        yield frame


def _content(seg: Segment, i: int, big: np.ndarray, bg: np.ndarray, obj: np.ndarray, w: int, h: int) -> np.ndarray:
    if seg.kind == "zoom":  # a window shrinking (speed > 0: zoom in) or growing about the centre, scaled to the frame
        s = 1.0 + abs(seg.speed_px) / 1000 * (i if seg.speed_px > 0 else seg.frames - 1 - i)
        cw, ch = w / s, h / s
        x0, y0 = 8 + (w - cw) / 2, 8 + (h - ch) / 2
        m = np.array([[cw / w, 0, x0], [0, ch / h, y0]], np.float32)
        return cv2.warpAffine(big, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    if seg.kind == "shake":
        dx, dy = seg.shake[i]
        return np.ascontiguousarray(big[8 + dy:8 + dy + h, 8 + dx:8 + dx + w])
    if seg.kind == "pan":  # a window sliding over a larger image: speed > 0 pans right (content slides left)
        x0 = 8 + int(round(i * seg.speed_px)) if seg.speed_px >= 0 else big.shape[1] - w - 8 + int(round(i * seg.speed_px))
        return np.ascontiguousarray(big[8:8 + h, x0:x0 + w])
    if seg.kind == "object":  # a textured square moves right over a still background
        frame = bg.copy()
        oh, ow = obj.shape[:2]
        x = int(round(w // 8 + i * seg.speed_px)) % max(1, w - ow)
        y = min(h // 3, h - oh)
        frame[y:y + oh, x:x + ow] = obj
        return frame
    return bg  # static


def write_video(
    path: str | Path,
    segments: list[Segment],
    width: int = 320,
    height: int = 192,
    fps: int = 24,
    codec: str = "libx264",
    vfr_jitter: float = 0.0,
    rotation_deg: int = 0,
    seed: int = 0,
    codec_options: dict[str, str] | None = None,
    pix_fmt: str = "yuv420p",
) -> Truth:
    """Encode `segments` into `path`; `vfr_jitter` > 0 makes frame durations vary (variable frame rate).

    `codec_options` go to the encoder after the defaults (e.g. {"x264-params": "scenecut=0"}
    keeps keyframes off the cuts).
    """
    path = str(path)
    rng = np.random.default_rng(seed)
    truth = Truth(path=path, num_frames=0, fps=float(fps))
    time_base = Fraction(1, fps * 1000)
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.time_base = stream.codec_context.time_base = time_base  # fine clock: VFR timestamps survive
        if codec == "libx264":
            stream.options = {"crf": "20", "preset": "veryfast", **(codec_options or {})}
        if rotation_deg:
            stream.set_display_rotation(rotation_deg)
        pts, idx = 0, 0
        for s_i, seg in enumerate(segments):
            if s_i > 0 and seg.kind != "black" and segments[s_i - 1].kind != "black" and not seg.fade_in:
                truth.cuts.append(idx)
            start = idx
            for img in _segment_frames(seg, width, height):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = pts, time_base
                truth.times_s.append(float(pts * time_base))
                for packet in stream.encode(frame):
                    out.mux(packet)
                step = 1000 * (1 + (rng.uniform(-vfr_jitter, vfr_jitter) if vfr_jitter else 0.0))
                pts += max(1, int(step))
                idx += 1
            truth.segments.append((seg.kind, start, idx))
            if seg.flash_at is not None:
                truth.flash_frames.append(start + seg.flash_at)
            truth.black_frames.extend(range(start, start + min(seg.fade_in, 1)))
            if seg.kind == "black":
                truth.black_frames.extend(range(start, idx))
        for packet in stream.encode():
            out.mux(packet)
    truth.num_frames = idx
    return truth


def standard_clip(path: str | Path, scale: int = 1, **kw) -> Truth:
    """The tests' clip: fade from black into a static shot, pan right, moving object (with a flash), pan left.

    `scale` repeats the whole sequence (new textures each time) to make longer clips for the benchmark.
    """
    segs: list[Segment] = []
    for r in range(scale):
        s = 10 * r
        segs += [
            Segment("static", 48, seed=s + 1, fade_in=12),
            Segment("pan", 48, speed_px=1.5, seed=s + 2),
            Segment("object", 49, speed_px=4.0, seed=s + 3, flash_at=24),
            Segment("pan", 40, speed_px=-1.5, seed=s + 4),
        ]
    return write_video(path, segs, **kw)


def corrupt_packets(src: str | Path, dst: str | Path, first: int, count: int = 3, seed: int = 0) -> None:
    """Copy `src` to `dst` with `count` video packets from `first` on replaced by random bytes (a decode error midway)."""
    rng = np.random.default_rng(seed)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        for k, packet in enumerate(inp.demux(ist)):
            if packet.dts is None:
                continue  # the demuxer's final flush packet
            if first <= k < first + count:
                bad = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                bad.pts, bad.dts, bad.time_base = packet.pts, packet.dts, packet.time_base
                packet = bad
            packet.stream = ost
            out.mux(packet)
