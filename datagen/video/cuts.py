"""Shot boundaries from the scan's thumbnails: hard cuts, black gaps, fades, flashes.

Signals are per decoded frame (luma thumbnails). The change between two frames is one minus
their normalised cross-correlation: blind to exposure changes and fades, ~0.01-0.2 for
motion inside a shot, ~0.8-1 across a cut even between look-alike scenes. A hard cut is a
change far above the local level (adaptive threshold) that persists (the frame after is
still unlike the frame before, which tells a cut from a flash). Black frames split
shots and are never used; fades from/to black and blown-out frames are never used either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class CutConfig:
    cut_min_change: float = 0.4  # 1 - NCC; measured: cuts 0.79-1.05, motion inside shots <= 0.2 (a hand entering)
    cut_ratio: float = 4.0  # and 4x the local median: fast pans raise the local level, cuts stand out anyway
    flat_std: float = 3.0  # thumbnails with luma std below 3/255 are flat: NCC is noise, compare means instead
    flat_mean_jump: float = 0.1  # between flat frames (or flat and textured), a mean step of 10% is a change
    window: int = 8  # decoded frames each side for the local median (~0.5-1 s)
    transient_ratio: float = 0.5  # flash: prev->next differ < half of what the frame differs from both
    black_max: float = 0.15  # 98th percentile luma below this: nothing visible (dark scenes still have highlights)
    blown_min: float = 0.9  # 2nd percentile luma above this: washed out (flashes, overexposure)
    fade_min_step: float = 0.004  # brightness change per frame that counts as fading (normal drift is ~0.001)


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
class Shots:
    shots: list[Shot]
    cuts: list[int]  # first frame of the new shot, hard cuts only (not black gaps)
    unusable: dict[int, str] = field(default_factory=dict)  # frame index -> black|blown|transient|fade
    brightness: dict[int, float] = field(default_factory=dict)  # frame index -> mean luma 0-1


def _changes(a: np.ndarray, b: np.ndarray, cfg: CutConfig) -> np.ndarray:
    """1 - normalised cross-correlation of each row of `a` (n, p) with the same row of `b` (0 same
    picture, ~1 unrelated); rows that are flat (no texture) compare their means instead."""
    ma, mb = a.mean(1), b.mean(1)
    sa, sb = a.std(1), b.std(1)
    flat = (sa < cfg.flat_std) | (sb < cfg.flat_std)
    ncc = ((a - ma[:, None]) * (b - mb[:, None])).mean(1) / np.where(flat, 1.0, sa * sb)
    jump = np.abs(ma - mb) / 255.0 > cfg.flat_mean_jump
    return np.where(flat, jump.astype(np.float64), 1.0 - ncc.astype(np.float64))


def detect(index: np.ndarray, thumbs: np.ndarray, times_s: np.ndarray, cfg: CutConfig,
           refine: Callable[[int, int], dict[int, np.ndarray]] | None = None) -> Shots:
    """Shots of one video; `refine(first, last)` returns thumbnails of every frame in between to place a cut exactly."""
    n = len(index)
    flat = thumbs.reshape(n, -1)
    bright = flat.mean(1) / 255.0
    # percentiles by counting (uint8 histograms): np.percentile sorts every row, ~10x slower
    rows = (flat.astype(np.int64) + 256 * np.arange(n)[:, None]).ravel()
    cum = np.cumsum(np.bincount(rows, minlength=256 * n).reshape(n, 256), axis=1)
    p98 = np.argmax(cum >= 0.98 * flat.shape[1], axis=1) / 255.0
    p2 = np.argmax(cum > 0.02 * flat.shape[1], axis=1) / 255.0
    status = np.array(["ok"] * n, dtype=object)
    status[p98 < cfg.black_max] = "black"
    status[p2 > cfg.blown_min] = "blown"
    f32 = flat.astype(np.float32)
    d = np.zeros(n)
    d[1:] = _changes(f32[:-1], f32[1:], cfg)
    spike = np.zeros(n, bool)
    if n > 2:  # flashes and glitches: unlike both neighbours, which are alike
        low = np.minimum(d[1:-1], d[2:])
        skip = _changes(f32[:-2], f32[2:], cfg)
        spike[1:-1] = (low > cfg.cut_min_change / 2) & (skip < cfg.transient_ratio * low)
    status[spike & (status == "ok")] = "transient"
    good = (status != "black") & ~spike
    cuts_pos = []
    for k in range(1, n):
        if d[k] <= cfg.cut_min_change or not (good[k] and good[k - 1]):
            continue  # (the cheap test first: the local median is only needed for the few large changes)
        lo, hi = max(1, k - cfg.window), min(n, k + cfg.window + 1)
        local = np.median(np.delete(d[lo:hi], k - lo)) if hi - lo > 1 else 0.0
        if d[k] > max(cfg.cut_min_change, cfg.cut_ratio * local):
            cuts_pos.append(k)
    cuts = [_place_cut(int(index[k - 1]), int(index[k]), refine, cfg) for k in cuts_pos]
    _mark_fades(status, bright, cfg)
    shots = _shots(index, status, cuts_pos, cuts, times_s)
    return Shots(shots=shots, cuts=cuts, unusable={int(index[k]): str(status[k]) for k in range(n) if status[k] != "ok"},
                 brightness={int(index[k]): float(bright[k]) for k in range(n)})


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
    """Runs of visible frames, split at cuts and at black frames."""
    shots: list[Shot] = []
    cut_at = dict(zip(cuts_pos, cuts))
    start = None
    fade_in = False
    n = len(index)
    for k in range(n + 1):
        boundary = k == n or status[k] == "black" or k in cut_at
        if boundary and start is not None:
            end_frame = cut_at[k] - 1 if k in cut_at else int(index[k - 1])
            first = cut_at.get(start, int(index[start]))
            fade_out = status[k - 1] == "fade"
            shots.append(Shot(len(shots), first, end_frame, float(times_s[first]), float(times_s[end_frame]), fade_in, fade_out))
            start = None
        if k < n and status[k] != "black" and start is None:
            start = k
            fade_in = status[k] == "fade"
    return shots
