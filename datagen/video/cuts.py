"""Shot boundaries from the scan's thumbnails: hard cuts, jump cuts, gradual transitions, black gaps, flashes.

Signals are per decoded frame (luma thumbnails). The change between two frames is one minus
their normalised cross-correlation: blind to exposure changes and fades, ~0.01-0.2 for
motion inside a shot, ~0.3-1 across a cut (look-alike cuts, another framing of the same
scene, sit at the low end). Two tests find cuts:
- a strong change (above `cut_min_change`) that persists (the frame after is still unlike
  the frame before, which tells a cut from a flash);
- a spike: a smaller change (jump cuts on a still camera: the same background, people
  elsewhere) that dwarfs the steps on either side of it and the local level. The local
  level ignores other cuts, so a fast-cut passage does not blind it.
A broken frame next to a cut gives two strong changes in a row: one cut, at the broken
frame, which is marked unusable. Gradual transitions (dissolves, wipes) are frames that lie
between the pictures some frames before and after them (per pixel, as a blend or a wipe
makes them) while those two pictures are unrelated: the span is unusable and splits the
shot. Black frames split shots and are never used; fades from/to black and blown-out frames
are never used either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from datagen.video.motion import frame_shifts


# Frames per block of the detector's per-frame float work. Its arrays are a few copies of the
# thumbnails as float32/int64 (4-8x their bytes each): done at once over a 10-minute window they
# peaked at ~110 MiB for 1,600 thumbnails (tracemalloc, bench/scale.py's 2-hour video), and grow
# with the window; in blocks they stay ~10 MB, whatever the window. Rows are computed one by one
# either way, so the results are the same to the bit.
BLOCK_FRAMES = 256
GRADUAL_SHRINK = 2  # the gradual test reads 32x24 averages of the 64x48 thumbnails (16x12 lets moving shots pass)


@dataclass
class CutConfig:
    cut_min_change: float = 0.3  # 1 - NCC; measured: cuts 0.75-1.25, look-alike cuts 0.32-1.15, inside shots p99 <= 0.19
    cut_ratio: float = 4.0  # and 4x the local median: fast pans raise the local level, cuts stand out anyway
    spike_min_change: float = 0.1  # a jump cut changes a still picture by 0.12-0.44 (the moved people)...
    spike_ratio: float = 4.0  # ...and by 4x more than the steps on either side (measured: 3-40x; motion ~1-2x)
    flat_std: float = 3.0  # thumbnails with luma std below 3/255 are flat: NCC is noise, compare means instead
    flat_mean_jump: float = 0.1  # between flat frames (or flat and textured), a mean step of 10% is a change
    window: int = 8  # decoded frames each side for the local median (~0.5-1 s)
    transient_ratio: float = 0.5  # flash: prev->next differ < half of what the frame differs from both
    black_max: float = 0.15  # 98th percentile luma below this: nothing visible (dark scenes still have highlights)
    blown_min: float = 0.9  # 2nd percentile luma above this: washed out (flashes, overexposure)
    fade_min_step: float = 0.004  # brightness change per frame that counts as fading (normal drift is ~0.001)
    # gradual transitions: the frame `w` frames before and after (for each w) are unrelated...
    gradual_widths_frames: tuple[int, ...] = (3, 6, 10, 16)  # half-widths: dissolves of 5-30 frames have ends outside one
    gradual_min_change: float = 0.5  # ...(NCC change above 0.5, a cut's level)...
    # ...and the middle frame lies between them (mean distance outside the two / mean |a-b|; measured on
    # the evaluation set: transitions' best centres 0.03-0.1, moving shots >= 0.12 at the 5th percentile)...
    gradual_max_outside: float = 0.15
    gradual_mix: tuple[float, float] = (0.2, 0.8)  # ...with a real share of each (a cut's frame is all one side)...
    gradual_max_blend: float = 0.35  # ...and is either one blend of the two (dissolve; moving shots >= 0.47)...
    gradual_max_nearest: float = 0.15  # ...or, pixel by pixel, one or the other (wipe; moving shots >= 0.12)
    gradual_max_step: float = 0.6  # a span holding a step above this is a hard cut (cuts 0.75-1.25), not a blend
    # ...unless the far frames are one picture moved: the first, shifted along the camera path measured
    # between them (frame_shifts), matches the last. A slow pan of fine texture decorrelates the small
    # images within a few frames and then passes the blend test (measured: the 16x synthetic clip's
    # 1.5 px/frame pans); its far frames warped match to <= 0.2, a transition's stay unrelated (0.75-1.25).
    gradual_moved_max_change: float = 0.5
    min_shot_frames: int = 6  # boundaries closer than this are one (a fade's ramps, a transition's edges)


@dataclass
class Shot:
    shot: int
    start_frame: int  # inclusive, first visible frame
    end_frame: int  # inclusive
    start_s: float
    end_s: float
    fade_in: bool = False
    fade_out: bool = False


@dataclass
class FrameSteps:
    """The cut signal of every decoded frame, kept for the pairs' continuity check."""

    index: np.ndarray  # int64 (n,) decoded frames
    change: np.ndarray  # float32 (n,): change from the previous decoded frame (0 for the first)
    back: np.ndarray  # float32 (n,): change from the previous to the next decoded frame (low: a flash at this one)
    # float32 (n, 2): content shift from the previous decoded frame, fractions of the diagonal
    # (motion.frame_shifts): the camera's path between two grid frames. None in older rows.
    shift: np.ndarray | None = None


@dataclass
class Shots:
    shots: list[Shot]
    cuts: list[int]  # first frame of the new shot, hard and jump cuts only (not black gaps or transitions)
    unusable: dict[int, str] = field(default_factory=dict)  # frame index -> black|blown|transient|fade|transition
    brightness: dict[int, float] = field(default_factory=dict)  # frame index -> mean luma 0-1
    transitions: list[tuple[int, int]] = field(default_factory=list)  # gradual transitions: (first, last) frame
    steps: FrameSteps | None = None


def _changes(a: np.ndarray, b: np.ndarray, cfg: CutConfig) -> np.ndarray:
    """1 - normalised cross-correlation of each row of `a` (n, p) with the same row of `b` (0 same
    picture, ~1 unrelated); rows that are flat (no texture) compare their means instead."""
    return _change_of(_standardised(a, cfg), _standardised(b, cfg), cfg)


def _changes_at(rows: np.ndarray, ia: np.ndarray, ib: np.ndarray, cfg: CutConfig) -> np.ndarray:
    """`_changes(rows[ia], rows[ib])`, BLOCK_FRAMES rows at a time."""
    out = np.empty(len(ia))
    for s in range(0, len(ia), BLOCK_FRAMES):
        block = slice(s, s + BLOCK_FRAMES)
        out[block] = _changes(rows[ia[block]], rows[ib[block]], cfg)
    return out


def _standardised(rows: np.ndarray, cfg: CutConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows standardised to zero mean and unit variance in float32, their means, which are flat);
    a flat row (no texture) is only centred: its changes compare means instead."""
    z = rows.astype(np.float32)
    mean = z.mean(1)
    z -= mean[:, None]
    std = np.sqrt((z * z).mean(1))
    flat = std < cfg.flat_std
    z /= np.where(flat, 1.0, std)[:, None]
    return z, mean, flat


def _change_of(a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray],
               cfg: CutConfig) -> np.ndarray:
    """`_changes` of two sets of rows as `_standardised` gives them."""
    (za, ma, fa), (zb, mb, fb) = a, b
    ncc = (za * zb).mean(1, dtype=np.float64)
    jump = np.abs(ma - mb) / 255.0 > cfg.flat_mean_jump
    return np.where(fa | fb, jump.astype(np.float64), 1.0 - ncc)


def neighbour_changes(rows: np.ndarray, offsets: tuple[int, ...], cfg: CutConfig) -> list[np.ndarray]:
    """For each offset o, `_changes` from row k to row k + o for every k (n - o values).

    BLOCK_FRAMES rows at a time (memory stays bounded on a long window), and each row is
    standardised once for all offsets: `_changes` per pair re-derived both rows' means and
    deviations, ~2/3 of the cut signal's CPU (0.13 s of a 2-minute clip's first half, 1.4 s).
    """
    n, reach = len(rows), max(offsets)
    outs = [np.zeros(max(0, n - o)) for o in offsets]
    for s in range(0, n, BLOCK_FRAMES):
        z, mean, flat = _standardised(rows[s:s + BLOCK_FRAMES + reach], cfg)
        for o, out in zip(offsets, outs):
            m = min(BLOCK_FRAMES, n - o - s)  # the pairs (k, k + o) with k in [s, s + m)
            if m <= 0:
                continue
            a, b = slice(0, m), slice(o, o + m)
            out[s:s + m] = _change_of((z[a], mean[a], flat[a]), (z[b], mean[b], flat[b]), cfg)
    return outs


def _dark_bright_levels(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of uint8 `flat`: its 98th and 2nd percentile levels (0-1), by counting (uint8
    histograms: np.percentile sorts every row, ~10x slower), BLOCK_FRAMES rows at a time."""
    n, p = flat.shape
    p98, p2 = np.empty(n), np.empty(n)
    for s in range(0, n, BLOCK_FRAMES):
        block = flat[s:s + BLOCK_FRAMES]
        m = len(block)
        cum = np.cumsum(np.bincount((block.astype(np.int64) + 256 * np.arange(m)[:, None]).ravel(),
                                    minlength=256 * m).reshape(m, 256), axis=1)
        p98[s:s + m] = np.argmax(cum >= 0.98 * p, axis=1) / 255.0
        p2[s:s + m] = np.argmax(cum > 0.02 * p, axis=1) / 255.0
    return p98, p2


def local_level(d: np.ndarray, k: int, cfg: CutConfig) -> float:
    """Median step around `k` (itself left out), ignoring steps that are cuts themselves."""
    lo, hi = max(1, k - cfg.window), min(len(d), k + cfg.window + 1)
    w = np.delete(d[lo:hi], k - lo)
    w = w[w <= cfg.cut_min_change]
    return float(np.median(w)) if len(w) else 0.0


def is_spike(d: np.ndarray, k: int, local: float, cfg: CutConfig) -> bool:
    """A step that dwarfs both neighbouring steps and the local level."""
    beside = max(d[k - 1] if k > 1 else 0.0, d[k + 1] if k + 1 < len(d) else 0.0)
    return d[k] > cfg.spike_min_change and d[k] > cfg.spike_ratio * max(local, beside)


def detect(index: np.ndarray, thumbs: np.ndarray, times_s: np.ndarray, cfg: CutConfig,
           refine: Callable[[int, int], dict[int, np.ndarray]] | None = None,
           given: tuple[list[int], list[tuple[int, int]]] | None = None) -> Shots:
    """Shots of one video; `refine(first, last)` returns thumbnails of every frame in between to place a cut exactly.

    `given` (cuts, transitions) replaces this detector's own boundaries (another detector's,
    e.g. TransNetV2's, on a scan of every frame); black, blown, flash and fade frames are still
    found here.
    """
    n = len(index)
    flat = thumbs.reshape(n, -1)
    bright = flat.mean(1) / 255.0
    p98, p2 = _dark_bright_levels(flat)
    status = np.array(["ok"] * n, dtype=object)
    status[p98 < cfg.black_max] = "black"
    status[p2 > cfg.blown_min] = "blown"
    step, skip = neighbour_changes(flat, (1, 2), cfg)  # each frame against the one before, and the one before that
    d = np.r_[0.0, step]  # the cut signal: the change from each decoded frame's predecessor (0 for the first)
    spike = np.zeros(n, bool)
    back = d.copy()  # (first and last frame: no neighbour on one side, the step itself stands in)
    if n > 2:  # flashes and glitches: unlike both neighbours, which are alike
        low = np.minimum(d[1:-1], d[2:])
        back[1:-1] = skip
        spike[1:-1] = (low > cfg.cut_min_change / 2) & (back[1:-1] < cfg.transient_ratio * low)
    status[spike & (status == "ok")] = "transient"
    good = (status != "black") & ~spike
    cuts_pos: list[int] = []
    for k in range(1, n) if given is None else ():
        if d[k] <= cfg.spike_min_change or not (good[k] and good[k - 1]):
            continue  # (the cheap test first: the local level is only needed for the few large changes)
        local = local_level(d, k, cfg)
        if (d[k] > cfg.cut_min_change and d[k] > cfg.cut_ratio * local) or is_spike(d, k, local, cfg):
            if cuts_pos and cuts_pos[-1] == k - 1 and d[k] > cfg.cut_min_change:
                status[k - 1] = "transient"  # a broken frame at a cut: unlike both sides; the cut stays before it
                continue
            cuts_pos.append(k)
    shifts = frame_shifts(thumbs)
    if given is None:
        transitions = _gradual(index, thumbs, status, shifts, cfg)
        # a transition found around a hard cut is the cut's (a blend's steps are small, a cut's one step large)
        transitions = [(a, b) for a, b in transitions
                       if not any(a <= index[k] <= b and d[k] > cfg.gradual_max_step for k in cuts_pos)]
    else:
        cuts_pos = sorted({int(k) for k in np.searchsorted(index, given[0]) if 0 < k < n})
        transitions = [(int(a), int(b)) for a, b in given[1]]
    inside = np.zeros(n, bool)
    for first, last in transitions:
        inside |= (index >= first) & (index <= last)
    status[inside & (status != "black")] = "transition"
    cuts_pos = [k for k in cuts_pos if not inside[k] and not inside[k - 1]]
    cuts = [_place_cut(int(index[k - 1]), int(index[k]), refine, cfg) for k in cuts_pos]
    _mark_fades(status, bright, cfg)
    shots = _shots(index, status, cuts_pos, cuts, times_s)
    # a shot of a few frames, or of unusable frames only (a fade's ramp next to a transition), is part of the boundary
    def empty(s: Shot) -> bool:
        frames = (index >= s.start_frame) & (index <= s.end_frame)
        return s.end_frame - s.start_frame + 1 < cfg.min_shot_frames or not (status[frames] == "ok").any()
    for short in [s for s in shots if empty(s)]:
        status[(index >= short.start_frame) & (index <= short.end_frame) & (status == "ok")] = "transition"
    shots = [s for s in shots if not empty(s)]
    for k, s in enumerate(shots):
        s.shot = k
    cuts = [c for c in cuts if any(s.start_frame == c for s in shots)]
    return Shots(shots=shots, cuts=cuts, unusable={int(index[k]): str(status[k]) for k in range(n) if status[k] != "ok"},
                 brightness={int(index[k]): float(bright[k]) for k in range(n)}, transitions=transitions,
                 steps=FrameSteps(index.astype(np.int64), d.astype(np.float32), back.astype(np.float32), shifts))


def _gradual(index: np.ndarray, thumbs: np.ndarray, status: np.ndarray, shifts: np.ndarray,
             cfg: CutConfig) -> list[tuple[int, int]]:
    """Spans (first, last frame) where frames lie between two unrelated pictures: dissolves and wipes.
    `shifts`: frame_shifts(thumbs), the camera path that tells a moved picture from another one."""
    n = len(index)
    small = _block_means(thumbs, GRADUAL_SHRINK)
    black = np.cumsum(np.r_[0, status == "black"])
    diag = float(np.hypot(thumbs.shape[2], thumbs.shape[1]))
    path = np.cumsum(shifts, 0) * diag  # thumbnail px from the first frame, (dx, dy)
    spans: list[tuple[int, int]] = []
    for w in cfg.gradual_widths_frames:
        lo = np.searchsorted(index, index - w).clip(0, n - 1)
        hi = (np.searchsorted(index, index + w, side="right") - 1).clip(0, n - 1)
        ok = (lo < np.arange(n)) & (hi > np.arange(n)) & (black[hi + 1] == black[lo])  # fades through black: not here
        k = np.flatnonzero(ok)
        if not len(k):
            continue
        k = k[_changes_at(small, lo[k], hi[k], cfg) > cfg.gradual_min_change]
        for s in range(0, len(k), BLOCK_FRAMES):
            hit = _blends(small, lo, hi, k[s:s + BLOCK_FRAMES], cfg)
            spans += [(int(index[i]) - w // 2, int(index[i]) + w // 2) for i in hit
                      if not _moved(thumbs, path, int(lo[i]), int(hi[i]), cfg)]
    merged: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def _block_means(thumbs: np.ndarray, f: int) -> np.ndarray:
    """(n, h/f * w/f) float32 averages of each thumbnail's f x f blocks, BLOCK_FRAMES frames at a time.
    A sum of the f*f strided slices in uint16: a float mean over two axes of a 5-d view was ~15x
    slower (2.5 % of the first half's CPU), and the values are the same to the bit."""
    n, h, w = thumbs.shape[0], thumbs.shape[1] // f, thumbs.shape[2] // f
    small = np.empty((n, h * w), np.float32)
    for s in range(0, n, BLOCK_FRAMES):
        block = thumbs[s:s + BLOCK_FRAMES, :h * f, :w * f].astype(np.uint16)
        total = sum(block[:, i::f, j::f] for i in range(f) for j in range(f))
        small[s:s + BLOCK_FRAMES] = (total.astype(np.float32) / np.float32(f * f)).reshape(len(block), -1)
    return small


def _moved(thumbs: np.ndarray, path: np.ndarray, a: int, b: int, cfg: CutConfig) -> bool:
    """Whether frame `b` is frame `a` moved along the measured camera path (compared inside the
    border the shift uncovers)."""
    dx, dy = path[b] - path[a]
    h, w = thumbs.shape[1:3]
    mx, my = int(np.ceil(abs(dx))) + 1, int(np.ceil(abs(dy))) + 1
    if 2 * mx >= w or 2 * my >= h:
        return False  # moved out of the picture: nothing left to compare
    warp = np.float32([[1, 0, dx], [0, 1, dy]])
    moved = cv2.warpAffine(thumbs[a].astype(np.float32), warp, (w, h), flags=cv2.INTER_LINEAR)
    inner = (slice(my, h - my), slice(mx, w - mx))
    change = _changes(moved[inner].reshape(1, -1), thumbs[b][inner].reshape(1, -1), cfg)[0]
    return bool(change <= cfg.gradual_moved_max_change)


def _blends(small: np.ndarray, lo: np.ndarray, hi: np.ndarray, k: np.ndarray, cfg: CutConfig) -> np.ndarray:
    """The frames of `k` that look like a blend of frames `lo[k]` and `hi[k]`."""
    a, m, b = small[lo[k]], small[k], small[hi[k]]
    outside = np.maximum(0, np.maximum(np.minimum(a, b) - m, m - np.maximum(a, b))).mean(1)
    spread = np.abs(a - b).mean(1) + 1e-6
    mix = ((m - a) * (b - a)).sum(1) / (((b - a) ** 2).sum(1) + 1e-6)
    blend = np.abs(m - (a + mix[:, None] * (b - a))).mean(1) / spread
    nearest = np.minimum(np.abs(m - a), np.abs(m - b)).mean(1) / spread
    hit = k[(outside / spread < cfg.gradual_max_outside) & (mix > cfg.gradual_mix[0]) & (mix < cfg.gradual_mix[1])
            & ((blend < cfg.gradual_max_blend) | (nearest < cfg.gradual_max_nearest))]
    return hit


def _place_cut(before: int, after: int, refine, cfg: CutConfig) -> int:
    """The scan may have skipped frames between `before` and `after`: find the exact cut among them."""
    if after - before <= 1 or refine is None:
        return after
    window = refine(before, after)
    idx = sorted(window)
    if len(idx) < 2:
        return after
    thumbs = np.stack([window[i] for i in idx]).reshape(len(idx), -1).astype(np.float32)
    jumps = _changes(thumbs[:-1], thumbs[1:], cfg)
    return idx[int(np.argmax(jumps)) + 1]


def _mark_fades(status: np.ndarray, bright: np.ndarray, cfg: CutConfig) -> None:
    """Frames next to a black run whose brightness keeps ramping are a fade in/out."""
    n = len(status)
    for k in range(n):
        if status[k] != "black":
            continue
        j = k + 1  # fade in: rising after the black frame
        while j < n - 1 and status[j] != "black" and bright[j + 1] - bright[j] > cfg.fade_min_step:
            status[j] = "fade"
            j += 1
        j = k - 1  # fade out: falling before the black frame
        while j > 0 and status[j] != "black" and bright[j - 1] - bright[j] > cfg.fade_min_step:
            status[j] = "fade"
            j -= 1


def _shots(index: np.ndarray, status: np.ndarray, cuts_pos: list[int], cuts: list[int], times_s: np.ndarray) -> list[Shot]:
    """Runs of visible frames, split at cuts, black frames and gradual transitions."""
    shots: list[Shot] = []
    cut_at = dict(zip(cuts_pos, cuts))
    start = None
    fade_in = False
    n = len(index)
    for k in range(n + 1):
        boundary = k == n or status[k] in ("black", "transition") or k in cut_at
        if boundary and start is not None:
            end_frame = cut_at[k] - 1 if k in cut_at else int(index[k - 1])
            first = cut_at.get(start, int(index[start]))
            fade_out = status[k - 1] == "fade"
            shots.append(Shot(len(shots), first, end_frame, float(times_s[first]), float(times_s[end_frame]), fade_in, fade_out))
            start = None
        if k < n and status[k] not in ("black", "transition") and start is None:
            start = k
            fade_in = status[k] == "fade"
    return shots
