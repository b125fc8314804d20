"""Choose frame pairs inside shots from the scan's analysis images (no further decoding).

A pair is kept only when the content runs continuously from A to B, whatever the shot
detector decided: every step of the analysis grid between them is explained by motion
(flow warp error low on each step), and no decoded frame between them changes like a cut
or like a jump cut (a step that dwarfs its neighbours and does not come back, as a flash
does). That catches jump cuts and whatever boundary the detector missed (`discontinuous`).

Deterministic: candidates are visited in time order and every tie is broken by position,
so the same video and config give the same (shot, pair) numbering and frames.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from datagen.video.cuts import FrameSteps, Shots
from datagen.video.motion import MotionConfig, blur_score, mean_abs_diff, motion_facts, step_motion


@dataclass
class ContinuityConfig:
    # a grid step (0.5 s) the flow cannot explain: a cut, a wipe, a teleport. Measured at half the
    # analysis size (4x cheaper flow) on the evaluation set: 0.045 keeps every continuous pair
    # the full size kept and lets none over a boundary through; 0.06 lets a wipe's tail through
    max_step_warp_error: float = 0.045
    max_frame_change: float = 0.3  # no decoded frame may change like a cut does (the detector's own cut level)...
    # ...nor like a jump cut: 0.06 (the detector asks 0.1: dropping a pair costs less than splitting
    # a shot) and 4x its neighbours per frame (3x trips on encoders' quality flicker over large
    # textured objects; 4x still lets no pair over a boundary through on the evaluation set)
    spike_min_change: float = 0.06
    spike_ratio: float = 4.0
    flash_ratio: float = 0.5  # a step whose frame after returns to the frame before (< half the step) is a flash
    window: int = 8  # decoded frames each side for the local level
    margin_steps: int = 1  # grid steps checked beyond A and B: their frames must not sit at a transition's tail


class Continuity:
    """The continuity test of one video: the frame test is computed once for every decoded frame,
    grid steps' flow once per step (shared by all pairs), on half-size analysis images."""

    def __init__(self, grid_index: np.ndarray, images: list[np.ndarray], steps: FrameSteps | None,
                 cfg: ContinuityConfig, skip: set[int] = frozenset()):
        self.grid_index, self.images, self.cfg = grid_index, images, cfg
        self._steps: dict[tuple[int, int], tuple[float, float, float]] = {}
        self._small: dict[int, np.ndarray] = {}
        self.skip = set(skip)
        self.rejected: list[dict] = []  # facts of the pairs rejected as discontinuous, worst step included
        self.frames = steps.index if steps is not None else np.zeros(0, np.int64)
        self.shift = steps.shift if steps is not None else None
        self.change, self.ratio, self.broken = self._frame_test(steps)

    def _frame_test(self, steps: FrameSteps | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per decoded frame: its change (from the frame before a flash, after one), that change over
        its neighbours and the local median, and whether it breaks continuity (flashes never do)."""
        if steps is None or len(steps.index) < 3:
            z = np.zeros(len(self.frames))
            return z, z, z.astype(bool)
        cfg = self.cfg
        d, back = steps.change.astype(np.float64), steps.back.astype(np.float64)
        n = len(d)
        flash = np.zeros(n + 1, bool)  # [n] stays False: "the frame after the last" is no flash
        flash[1:n - 1] = (back[1:-1] < cfg.flash_ratio * d[1:-1]) & (d[2:] > cfg.flash_ratio * d[1:-1])
        change = np.where(np.r_[False, flash[:n - 1]], np.r_[0.0, back[:-1]], d)
        # Decoded frames are unevenly spaced (skipped B-frames, every frame before keyframes): motion
        # changes a 4-frame step 4x more than a 1-frame step, a cut changes both alike. Ratios
        # compare changes per frame.
        gap = np.maximum(np.diff(steps.index, prepend=steps.index[0] - 1), 1).astype(np.float64)
        rate = d / gap
        before = np.where(np.r_[True, True, flash[1:n - 1]], 0.0, np.r_[0.0, rate[:-1]])
        after = np.where(flash[1:n + 1], 0.0, np.r_[rate[1:], 0.0])
        w = cfg.window
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(rate, w, mode="edge"), 2 * w + 1)
        level = np.median(np.delete(windows, w, axis=1), axis=1)
        ratio = (change / gap) / np.maximum.reduce([before, after, level, np.full(n, 1e-3)])
        broken = ~flash[:n] & ((change > cfg.max_frame_change) | ((change > cfg.spike_min_change) & (ratio > cfg.spike_ratio)))
        broken[0] = False
        return change, ratio, broken

    def _image(self, p: int) -> np.ndarray:
        if p not in self._small:
            img = self.images[p]
            self._small[p] = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
        return self._small[p]

    def _step(self, p: int, q: int) -> tuple[float, float, float]:
        """(warp error, background shift x, y) from grid frame p to q (positions in the grid)."""
        if (p, q) not in self._steps:
            self._steps[p, q] = step_motion(self._image(p), self._image(q))
        return self._steps[p, q]

    def _path(self, ga: int, gb: int) -> list[int]:
        """Grid positions from ga to gb, stepping over flash frames (a longer, stricter step)."""
        return [k for k in range(ga, gb + 1) if k in (ga, gb) or int(self.grid_index[k]) not in self.skip]

    def camera_path(self, a: int, b: int) -> tuple[float, float]:
        """(length of the camera's path, its net shift) from frame a to b, fractions of the diagonal: along
        every decoded frame where the scan measured their shifts, else along the grid."""
        if self.shift is not None and len(self.shift) == len(self.frames):
            lo, hi = (int(x) for x in np.searchsorted(self.frames, [a, b], side="right"))  # frames in (a, b]
            steps = self.shift[lo:hi].astype(np.float64)
            if len(steps):
                return float(np.linalg.norm(steps, axis=1).sum()), float(np.linalg.norm(steps.sum(0)))
        ga, gb = (int(x) for x in np.searchsorted(self.grid_index, [a, b]))
        path = self._path(ga, gb)
        steps = np.array([self._step(p, q)[1:] for p, q in zip(path, path[1:])] or [(0.0, 0.0)])
        return float(np.linalg.norm(steps, axis=1).sum()), float(np.linalg.norm(steps.sum(0)))

    def worst(self, a: int, b: int, shot_first: int, shot_last: int) -> dict:
        """The worst frame step and grid step between frames a and b, and the first frame where continuity breaks."""
        cfg = self.cfg
        g = self.grid_index
        ga, gb = (int(x) for x in np.searchsorted(g, [a, b]))
        # one grid step beyond each end too: a frame at the tail of a transition does not continue cleanly
        # (inside the shot: the frame before a shot's first frame is the other side of its boundary)
        for _ in range(cfg.margin_steps):
            ga -= ga > 0 and g[ga - 1] >= shot_first
            gb += gb + 1 < len(g) and g[gb + 1] <= shot_last
        a, b = int(g[ga]), int(g[gb])
        lo, hi = (int(x) for x in np.searchsorted(self.frames, [a, b], side="right"))  # decoded frames in (a, b]
        out = {"continuity_frame_change": 0.0, "continuity_frame_ratio": 0.0, "continuity_frame": b,
               "continuity_step_warp_error": 0.0, "continuity_step_warp_frame": b}
        if hi > lo:
            k = lo + int(np.argmax(self.change[lo:hi]))
            out.update(continuity_frame_change=round(float(self.change[k]), 4),
                       continuity_frame_ratio=round(float(self.ratio[k]), 2), continuity_frame=int(self.frames[k]))
            broken = np.flatnonzero(self.broken[lo:hi])
            if len(broken):  # no flow needed: the frame test already failed
                out["continuity_break_frame"] = int(self.frames[lo + broken[0]])
                return out
        path = self._path(ga, gb)
        warps = [(self._step(p, q)[0], int(g[q])) for p, q in zip(path, path[1:])]
        w_err, w_at = max(warps, default=(0.0, b))
        out.update(continuity_step_warp_error=round(w_err, 5), continuity_step_warp_frame=w_at)
        breaks = [at for err, at in warps if err > cfg.max_step_warp_error]
        out["continuity_break_frame"] = min(breaks) if breaks else None
        return out


@dataclass
class PairingConfig:
    min_gap_s: float = 0.5  # below 0.5 s most shots barely change: an edit needs a visible difference
    max_gap_s: float = 4.0  # beyond 4 s the scene drifts too far for one instruction to describe
    target_gap_s: float = 1.0  # first gap tried: about one action beat; static -> longer, too much -> shorter
    tries_per_frame: int = 3  # flow evaluations per candidate frame A before moving on
    boundary_margin_frames: int = 2  # keep off the shot's ends: some streams' timestamps are off by a frame
    max_failed_tries_per_shot: int = 32  # bounds CPU per shot (a try is ~4 ms of flow); 32 failures: mostly static
    min_shot_s: float = 1.0  # a shot shorter than min gap plus margins gives no stable pair
    min_pair_spacing_s: float = 1.0  # pairs of a shot start >= 1 s apart: no near-duplicate pairs
    max_pairs_per_shot: int = 4  # long static-camera shots must not dominate the corpus
    max_pairs_per_video: int = 16  # one video must not dominate a dataset version
    min_flow: float = 0.004  # p90 flow below 0.4% of the diagonal (<0.6 px at 128 px) is a static pair
    min_object_area: float = 0.01  # ...unless at least 1% of the frame moves on its own (a small object)
    max_flow: float = 0.12  # median flow above 12% of the diagonal: most content leaves/changes, flow unreliable
    max_warp_error: float = 0.05  # B warped by the flow still differs by >5% from A: flow failed (measured: good <0.03)
    duplicate_max_diff: float = 0.004  # mean |dY| below 0.4%: the same image (frozen/duplicated frames)
    min_blur: float = 30.0  # Laplacian variance at 128 px below 30 is visibly soft (measured: sharp >100)
    min_brightness: float = 0.06  # underexposed frames carry little learnable content
    max_brightness: float = 0.94  # overexposed ditto
    max_brightness_change: float = 0.35  # a bigger exposure jump is a flash or auto-exposure glitch, not an edit
    motion: MotionConfig = field(default_factory=MotionConfig)
    # the camera's path through every decoded frame from A to B longer than 1.5x its net shift plus
    # 2% of the diagonal: it went back and forth between A and B (handheld shake), which the A->B
    # fit alone cannot see. (A still camera's path is 0; a zoom's frame shifts are noise about 0,
    # measured under 2%; a 4 px sway at 256 px over a second, 6%.)
    shake_path_ratio: float = 1.5
    shake_min_path: float = 0.02
    continuity: ContinuityConfig = field(default_factory=ContinuityConfig)


@dataclass
class PairChoice:
    shot: int
    pair: int
    frame_a: int
    frame_b: int
    facts: dict


def choose_pairs(shots: Shots, grid_index: np.ndarray, grid_images: list[np.ndarray], times_s: np.ndarray,
                 cfg: PairingConfig, rejected: list[dict] | None = None) -> tuple[list[PairChoice], Counter]:
    """Pairs of every shot (round-robin over shots up to the per-video cap, spread evenly over the
    video when the cap cannot take a pair from every shot) and a count of rejection reasons.

    A shot's pairs are found one at a time, most-changing moment first, and only as far as the
    round-robin takes them: when the cap binds (a video of more shots than the cap has room for),
    no pair is searched for that the cap would drop (ten 10-second shots capped at 4 pairs: a
    third of the flow evaluations or less; a video whose shots give one pair each gains nothing).

    `rejected`, when given, receives the facts of each pair rejected as discontinuous (its worst steps).
    """
    why: Counter = Counter()
    flashes = {i for i, why_ in shots.unusable.items() if why_ in ("transient", "blown")}
    cont = Continuity(grid_index, grid_images, shots.steps, cfg.continuity, skip=flashes)
    if rejected is not None:
        cont.rejected = rejected
    pos = {int(i): k for k, i in enumerate(grid_index)}
    usable = [shot for shot in shots.shots if shot.end_s - shot.start_s >= cfg.min_shot_s]
    if len(usable) < len(shots.shots):
        why["short_shot"] = len(shots.shots) - len(usable)
    search = [_pairs_in_shot(shot, grid_index, shots, pos, grid_images, times_s, cfg, why, cont) for shot in usable]
    taken: list[list[tuple[int, int, dict]]] = [[] for _ in usable]
    live = list(range(len(usable)))  # shots whose search may still give a pair
    for _ in range(cfg.max_pairs_per_shot):
        budget = cfg.max_pairs_per_video - sum(map(len, taken))
        if budget <= 0 or not live:
            break
        ready = [(s, pair) for s in live if (pair := next(search[s], None)) is not None]
        live = [s for s, _ in ready]
        if len(ready) > budget:  # spread over the whole video: the first shots alone would bias long videos
            ready = [ready[k] for k in np.unique(np.round(np.linspace(0, len(ready) - 1, budget)).astype(int))]
        for s, pair in ready:
            taken[s].append(pair)
    chosen = [PairChoice(shot.shot, k, a, b, facts) for shot, pairs in zip(usable, taken)
              for k, (a, b, facts) in enumerate(sorted(pairs, key=lambda p: p[0]))]  # numbered in time order
    return chosen, why


def _frame_problem(i: int, shots: Shots, img: np.ndarray, cfg: PairingConfig, blur: dict[int, float]) -> str | None:
    """Why frame `i` cannot be part of a pair, if it cannot; its blur score goes into `blur`."""
    if i in shots.unusable:
        return shots.unusable[i]  # black / blown / transient / fade
    b = shots.brightness.get(i, float(img.mean()) / 255)
    if b < cfg.min_brightness:
        return "dark"
    if b > cfg.max_brightness:
        return "bright"
    blur[i] = blur_score(img)
    if blur[i] < cfg.min_blur:
        return "blurry"
    return None


def _pairs_in_shot(shot, grid_index: np.ndarray, shots: Shots, pos: dict, images: list, times_s: np.ndarray,
                   cfg: PairingConfig, why: Counter, cont: Continuity) -> Iterator[tuple[int, int, dict]]:
    """A shot's pairs (a, b, facts) as they are found, most-changing moments first (a cheap image
    difference ranks the A frames); up to `max_pairs_per_shot`, and no more failed tries than
    `max_failed_tries_per_shot`."""
    lo, hi = shot.start_frame + cfg.boundary_margin_frames, shot.end_frame - cfg.boundary_margin_frames
    cands = []
    blur: dict[int, float] = {}  # (computed once: the A and B frames' facts carry it too)
    for i in grid_index[(grid_index >= lo) & (grid_index <= hi)].tolist():
        reason = _frame_problem(i, shots, images[pos[i]], cfg, blur)
        if reason:
            why[reason] += 1
        else:
            cands.append(i)
    found: list[int] = []  # the A frames of the pairs found so far
    used: set[int] = set()  # a frame serves one pair only: repeated frames make near-duplicate samples
    failed = 0
    for a in sorted(cands, key=lambda a: (-_change(a, cands, pos, images, times_s, cfg), a)):
        if len(found) >= cfg.max_pairs_per_shot or failed >= cfg.max_failed_tries_per_shot:
            return
        if a in used or any(abs(times_s[a] - times_s[c]) < cfg.min_pair_spacing_s for c in found):
            continue
        tries: Counter = Counter()
        result = _best_b(shot, a, [c for c in cands if c not in used], pos, images, times_s, cfg, tries, cont, blur)
        failed += sum(tries.values())
        why.update(tries)
        if result is None:
            continue
        b, facts = result
        facts.update(gap_s=round(float(times_s[b] - times_s[a]), 4), shot_start_s=round(shot.start_s, 4),
                     shot_end_s=round(shot.end_s, 4), shot_start_frame=shot.start_frame, shot_end_frame=shot.end_frame,
                     shot_fade_in=shot.fade_in, shot_fade_out=shot.fade_out)
        found.append(a)
        used.update((a, b))
        yield a, b, facts


def _change(a: int, cands: list[int], pos: dict, images: list, times_s: np.ndarray, cfg: PairingConfig) -> float:
    """How much the picture changes from `a` to the frame one target gap later (0 when there is none)."""
    later = [b for b in cands if cfg.min_gap_s - 1e-6 <= times_s[b] - times_s[a] <= cfg.max_gap_s + 1e-6]
    if not later:
        return 0.0
    b = min(later, key=lambda x: (abs(times_s[x] - times_s[a] - cfg.target_gap_s), x))
    return mean_abs_diff(images[pos[a]], images[pos[b]])


def _best_b(shot, a: int, cands: list[int], pos: dict, images: list, times_s: np.ndarray, cfg: PairingConfig,
            why: Counter, cont: Continuity, blur: dict[int, float]) -> tuple[int, dict] | None:
    """Try gaps around the target: a static result asks for a longer gap, too much motion for a shorter one."""
    bs = [b for b in cands if cfg.min_gap_s - 1e-6 <= times_s[b] - times_s[a] <= cfg.max_gap_s + 1e-6]
    if not bs:
        why["no_partner_in_gap"] += 1
        return None
    gap = cfg.target_gap_s
    tried: set[int] = set()
    for _ in range(cfg.tries_per_frame):
        b = min((x for x in bs if x not in tried), key=lambda x: (abs(times_s[x] - times_s[a] - gap), x), default=None)
        if b is None:
            break
        tried.add(b)
        ia, ib = images[pos[a]], images[pos[b]]
        verdict, facts = _judge(ia, ib, cfg, (blur[a], blur[b]))
        if verdict is None:
            worst = cont.worst(a, b, shot.start_frame, shot.end_frame)
            broken = worst.pop("continuity_break_frame")
            if broken is None:
                path, net = cont.camera_path(a, b)
                if path > cfg.shake_path_ratio * net + cfg.shake_min_path:
                    facts["camera_motion"] = "complex"  # back and forth between A and B: handheld shake
                facts.update(camera_path=round(path, 5))
                return b, {**facts, **worst}
            why["discontinuous"] += 1
            cont.rejected.append({"frame_a": a, "frame_b": b, "break_frame": broken, **worst})
            if broken <= a:
                break  # A itself does not continue from the frame before it
            bs = [x for x in bs if x < broken]  # nothing at or past the break can pair with `a`
            continue
        why[verdict] += 1
        if verdict == "static" or verdict == "near_duplicate":
            gap = min(cfg.max_gap_s, 2 * (times_s[b] - times_s[a]))
        elif verdict == "too_much_motion":
            gap = max(cfg.min_gap_s, 0.5 * (times_s[b] - times_s[a]))
        else:
            break  # an exposure jump will not go away with another gap
    return None


def _judge(ia: np.ndarray, ib: np.ndarray, cfg: PairingConfig, blurs: tuple[float, float]) -> tuple[str | None, dict]:
    bright_a, bright_b = float(ia.mean()) / 255, float(ib.mean()) / 255
    if abs(bright_a - bright_b) > cfg.max_brightness_change:
        return "exposure_jump", {}
    if mean_abs_diff(ia, ib) < cfg.duplicate_max_diff:
        return "near_duplicate", {}
    facts = motion_facts(ia, ib, cfg.motion)
    if facts["flow_median"] > cfg.max_flow or facts["warp_error"] > cfg.max_warp_error:
        return "too_much_motion", facts
    if facts["flow_p90"] < cfg.min_flow and facts["object_motion_area"] < cfg.min_object_area:
        return "static", facts
    facts.update(brightness_a=round(bright_a, 4), brightness_b=round(bright_b, 4),
                 blur_a=round(blurs[0], 2), blur_b=round(blurs[1], 2))
    return None, facts
