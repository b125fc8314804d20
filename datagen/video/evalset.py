"""Edited videos with known shot boundaries, for the shot tests and bench/shots.py.

Pieces of the real clips (Megamind.avi cut into its own four shots, box.mp4: a still camera
and a large moving box) and of synthetic clips (pans, still backgrounds with moving
objects) are spliced with every kind of boundary a detector meets in edited footage:

- `cut`: a hard cut between two sources;
- `lookalike`: the same source, time running on, another framing (crop, zoom, mirror);
- `jump`: a still-camera source seconds later, same framing (a vlog's jump cut);
- `glitch`: a hard cut with one corrupted frame next to it;
- `dissolve` (5-30 frames), `fade` (out to black and back in), `wipe` (left to right).

Fast-cut passages (pieces of 8-14 frames) sit between ordinary pieces. Each video is
encoded with one GOP structure: x264 defaults, `scenecut=0` with a long GOP, or intra-only.
Everything is small (160x96) so the tests build the set in seconds.

`python -m datagen.video.evalset OUT_DIR` writes the videos and `truth.json`.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from datagen.video.synthetic import texture

SIZE_PX = (160, 96)  # (width, height): small enough to generate, scan and run TransNetV2 on quickly
FPS = 24
CUT_KINDS = ("cut", "lookalike", "jump", "glitch")  # boundaries at one frame
GRADUAL_KINDS = ("dissolve", "fade", "wipe")  # boundaries spread over a span of frames
GOPS = {  # the encoder's options for each GOP structure
    "x264": {},
    "longgop": {"x264-params": "scenecut=0:keyint=600"},
    "intra": {"x264-params": "keyint=1"},
}
MEGAMIND_SHOTS = [(1, 98), (98, 154), (154, 200), (200, 270)]  # frame 0 is black; cuts at 98, 154, 200


@dataclass
class Boundary:
    kind: str
    start: int  # cut kinds: first frame of the new shot; gradual: first frame of the transition
    end: int  # cut kinds: == start; gradual: last frame of the transition (inclusive)


@dataclass
class EvalVideo:
    path: str
    gop: str
    num_frames: int
    boundaries: list[Boundary] = field(default_factory=list)


@dataclass
class Source:
    """Frames of one continuous shot (RGB, at SIZE_PX), and whether its camera stands still."""

    name: str
    frames: np.ndarray
    still_camera: bool


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def _fit(img: np.ndarray, size=SIZE_PX) -> np.ndarray:
    """Centre-crop to the output aspect, then resize."""
    h, w = img.shape[:2]
    tw, th = size
    if w * th > h * tw:
        cw = h * tw // th
        img = img[:, (w - cw) // 2:(w - cw) // 2 + cw]
    else:
        ch = w * th // tw
        img = img[(h - ch) // 2:(h - ch) // 2 + ch]
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _synthetic(kind: str, n: int, seed: int) -> Source:
    w, h = SIZE_PX
    rng = np.random.default_rng(seed)
    if kind == "pan":
        speed = float(rng.uniform(0.6, 1.5)) * (1 if seed % 2 else -1)
        big = texture(h, w + int(abs(speed) * n) + 4, seed)
        x0 = [int(round(i * abs(speed))) for i in range(n)]
        if speed < 0:
            x0 = x0[::-1]
        return Source(f"pan{seed}", np.stack([big[:, x:x + w] for x in x0]), still_camera=False)
    bg = texture(h, w, seed)  # still camera, objects crossing it slowly
    objs = [texture(h // 3, h // 3 + 6 * k, seed + 100 + k) for k in range(2)]
    frames = []
    for i in range(n):
        f = bg.copy()
        for k, o in enumerate(objs):
            oh, ow = o.shape[:2]
            span = w - ow  # back and forth: wrapping round would teleport the object (a jump cut of its own)
            x = int(round(np.interp((4 + (0.8 + 0.5 * k) * i) % (2 * span), [0, span, 2 * span], [0, span, 0])))
            y = 6 + k * (h // 2)
            f[y:y + oh, x:x + ow] = o
        frames.append(f)
    return Source(f"still{seed}", np.stack(frames), still_camera=True)


def load_sources(videos_dir: Path) -> dict[str, Source]:
    """The real clips' shots and a few synthetic clips, all at SIZE_PX."""
    mm = [_fit(f) for f in _decode(videos_dir / "Megamind.avi")]
    out = {f"megamind{k}": Source(f"megamind{k}", np.stack(mm[a:b]), still_camera=False)
           for k, (a, b) in enumerate(MEGAMIND_SHOTS)}
    out["box"] = Source("box", np.stack([_fit(f) for f in _decode(videos_dir / "box.mp4")]), still_camera=True)
    for seed in range(1, 5):
        out[f"pan{seed}"] = _synthetic("pan", 400, seed)
        out[f"still{seed}"] = _synthetic("still", 400, 10 + seed)
    return out


def _reframe(frames: np.ndarray, how: str) -> np.ndarray:
    """Another framing of the same footage: a zoomed crop, a mirror, or both."""
    if how == "mirror":
        return frames[:, :, ::-1].copy()
    w, h = SIZE_PX
    zoom = 1.6 if how == "zoom" else 1.35
    cw, ch = int(w / zoom), int(h / zoom)
    x0 = (w - cw) // (4 if how == "crop_left" else 2)
    y0 = (h - ch) // 2
    return np.stack([cv2.resize(f[y0:y0 + ch, x0:x0 + cw], SIZE_PX, interpolation=cv2.INTER_LINEAR) for f in frames])


def _glitch(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A broken frame as a damaged stream shows it: blocks shifted, smeared and discoloured."""
    out = frame.copy()
    h, w = out.shape[:2]
    y = int(rng.integers(0, h // 3))
    out[y:] = np.roll(out[y:], int(rng.integers(w // 4, w // 2)), axis=1)
    for _ in range(12):
        bx, by = int(rng.integers(0, w - 16)), int(rng.integers(0, h - 16))
        out[by:by + 16, bx:bx + 16] = rng.integers(0, 256, 3, dtype=np.uint8)
    out[y + h // 3:] = out[y + h // 3:y + h // 3 + 1]  # the rest of the picture smeared down from one row
    return out


def _transition(kind: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`len(a)` frames going from the frames of `a` to those of `b` (both still play)."""
    n = len(a)
    t = (np.arange(n) + 1) / (n + 1)
    if kind == "dissolve":
        return np.stack([(a[i] * (1 - t[i]) + b[i] * t[i]).astype(np.uint8) for i in range(n)])
    if kind == "fade":  # out to black in the first half, in from black in the second
        half = n // 2
        out = [(a[i] * (1 - (i + 1) / half)).astype(np.uint8) for i in range(half)]
        out += [(b[i] * ((i - half) / (n - half))).astype(np.uint8) for i in range(half, n)]
        return np.stack(out)
    w = a.shape[2]  # wipe: the new picture enters from the left edge
    out = a.copy()
    for i in range(n):
        x = int(round(t[i] * w))
        out[i, :, :x] = b[i, :, :x]
    return out


class _Cursor:
    """Where each source has been used up to, so no footage repeats inside one video."""

    def __init__(self, sources: dict[str, Source]):
        self.sources = sources
        self.pos = dict.fromkeys(sources, 0)

    def left(self, name: str) -> int:
        return len(self.sources[name].frames) - self.pos[name]

    def take(self, name: str, n: int, skip: int = 0) -> np.ndarray | None:
        start = self.pos[name] + skip
        frames = self.sources[name].frames
        if start + n > len(frames):
            return None
        self.pos[name] = start + n
        return frames[start:start + n]


def edit(sources: dict[str, Source], seed: int, boundaries: int) -> tuple[np.ndarray, list[Boundary]]:
    """One edited video with `boundaries` boundaries of every kind, in a seeded random order."""
    rng = np.random.default_rng(seed)
    cur = _Cursor(sources)
    names = list(sources)
    still = [n for n in names if sources[n].still_camera]
    kinds = [CUT_KINDS[k % len(CUT_KINDS)] if k % 7 < 4 else GRADUAL_KINDS[k % 3] for k in range(boundaries)]
    rng.shuffle(kinds)
    out: list[np.ndarray] = []
    truth: list[Boundary] = []
    name, framing = str(rng.choice([n for n in names if len(sources[n].frames) >= 70])), "full"

    def piece(n_frames: int, src: str, how: str, skip: int = 0):
        frames = cur.take(src, n_frames, skip)
        if frames is None:
            return None
        return frames if how == "full" else _reframe(frames, how)

    first = piece(int(rng.integers(40, 70)), name, framing)
    out.extend(first)
    last_len = len(first)  # frames of the previous piece: a transition must not reach past it
    for k, kind in enumerate(kinds):
        # a fast-cut passage (not just before a transition: the two would overlap)
        following = kinds[k + 1] if k + 1 < len(kinds) else "cut"
        fast = rng.random() < 0.25 and kind in ("cut", "lookalike") and following in CUT_KINDS
        length = int(rng.integers(8, 15)) if fast else int(rng.integers(40, 70))
        need = length + (30 if kind in GRADUAL_KINDS else 0)
        skip = int(rng.integers(48, 96)) if kind == "jump" else 0
        if kind in ("lookalike", "jump") and (cur.left(name) < need + skip or (kind == "jump" and name not in still)):
            # the same footage again needs a source with enough left: cut to one first
            pool = [n for n in (still if kind == "jump" else names) if n != name and cur.left(n) >= 2 * need + skip]
            src = str(rng.choice(pool))
            pre = piece(need, src, "full")
            truth.append(Boundary("cut", len(out), len(out)))
            out.extend(pre)
            name, framing, last_len = src, "full", len(pre)
        if kind == "lookalike":
            src, how = name, str(rng.choice([h for h in ("zoom", "crop_left", "mirror", "full") if h != framing]))
        elif kind == "jump":
            src, how = name, framing
        else:
            src, how = str(rng.choice([n for n in names if n != name and cur.left(n) >= need])), "full"
        frames = piece(need, src, how, skip)
        at = len(out)
        if kind in GRADUAL_KINDS:
            span = min(int(rng.integers(5, 31)) if kind != "fade" else int(rng.integers(12, 31)), last_len - 6)
            old = np.stack(out[at - span:])
            out[at - span:] = list(_transition(kind, old, frames[:span]))
            truth.append(Boundary(kind, at - span, at - 1))
            frames = frames[span:]
        else:
            if kind == "glitch":
                g = int(rng.integers(0, 2))  # the broken frame ends the old shot or starts the new one
                if g:
                    frames = frames.copy()
                    frames[0] = _glitch(frames[0], rng)
                else:
                    out[-1] = _glitch(out[-1], rng)
            truth.append(Boundary(kind, at, at))
        out.extend(frames)
        last_len = len(frames)
        name, framing = src, how
    return np.stack(out), truth


def encode(path: Path, frames: np.ndarray, gop: str) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = SIZE_PX[0], SIZE_PX[1], "yuv420p"
        s.time_base = Fraction(1, FPS)
        s.options = {"crf": "20", "preset": "veryfast", **GOPS[gop]}
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def build(out_dir: Path, videos_dir: Path, videos: int = 6, boundaries_per_video: int = 18) -> list[EvalVideo]:
    """The evaluation set: `videos` edited videos cycling through the GOP structures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = load_sources(videos_dir)
    result = []
    for v in range(videos):
        frames, truth = edit(sources, seed=v, boundaries=boundaries_per_video)
        gop = list(GOPS)[v % len(GOPS)]
        path = out_dir / f"edit{v}_{gop}.mp4"
        encode(path, frames, gop)
        result.append(EvalVideo(str(path), gop, len(frames), truth))
    (out_dir / "truth.json").write_text(json.dumps([asdict(v) for v in result], indent=1))
    return result


def main(argv: list[str]) -> None:
    here = Path(__file__).resolve().parents[1] / "assets" / "videos"
    out = build(Path(argv[0]), Path(argv[1]) if len(argv) > 1 else here)
    kinds: dict[str, int] = {}
    for v in out:
        for b in v.boundaries:
            kinds[b.kind] = kinds.get(b.kind, 0) + 1
    print(f"{len(out)} videos, {sum(kinds.values())} boundaries: {kinds}")


if __name__ == "__main__":
    main(sys.argv[1:])


def load(out_dir: Path) -> list[EvalVideo]:
    data = json.loads((out_dir / "truth.json").read_text())
    return [EvalVideo(v["path"], v["gop"], v["num_frames"], [Boundary(**b) for b in v["boundaries"]]) for v in data]


def found_boundaries(shots) -> list[tuple[int, int]]:
    """A detector's boundaries as frame spans: cuts, and the gaps between shots (black, transitions)."""
    spans = [(c, c) for c in shots.cuts]
    for prev, nxt in zip(shots.shots, shots.shots[1:]):
        if nxt.start_frame not in shots.cuts:
            spans.append((prev.end_frame + 1, nxt.start_frame - 1) if nxt.start_frame > prev.end_frame + 1
                         else (nxt.start_frame, nxt.start_frame))
    return sorted(set(spans))


def match(truth: list[Boundary], found: list[tuple[int, int]]) -> tuple[dict[str, list[int]], list[tuple[int, int]]]:
    """Per kind [found, total] of true boundaries, and the found spans that match none.

    A cut counts when a found span reaches within one frame of it; a gradual transition when a
    found span overlaps it or its first or last frame (where the pure pictures start). Each found span explains one true boundary at most.
    """
    free = list(found)
    per_kind: dict[str, list[int]] = {}
    for b in sorted(truth, key=lambda b: b.end - b.start):  # narrow ones first: they have the fewest options
        lo, hi = b.start - 1, b.end + 1
        hit = next((s for s in free if s[0] <= hi and s[1] >= lo), None)
        tally = per_kind.setdefault(b.kind, [0, 0])
        tally[1] += 1
        if hit is not None:
            free.remove(hit)
            tally[0] += 1
    return per_kind, free


def spanning(truth: list[Boundary], pairs: list[tuple[int, int]]) -> int:
    """Pairs (frame_a, frame_b) with a boundary between their frames (or a frame inside a transition)."""
    def crosses(a: int, b: int, t: Boundary) -> bool:
        return a < t.start <= b if t.kind in CUT_KINDS else a <= t.end and b >= t.start
    return sum(any(crosses(a, b, t) for t in truth) for a, b in pairs)
