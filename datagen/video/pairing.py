"""Choose frame pairs inside shots from the scan's analysis images (no further decoding).

Deterministic: candidates are visited in time order and every tie is broken by position,
so the same video and config give the same (shot, pair) numbering and frames.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from datagen.video.cuts import Shots
from datagen.video.motion import MotionConfig, blur_score, mean_abs_diff, motion_facts


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


@dataclass
class PairChoice:
    shot: int
    pair: int
    frame_a: int
    frame_b: int
    facts: dict


def choose_pairs(shots: Shots, grid_index: np.ndarray, grid_images: list[np.ndarray], times_s: np.ndarray,
                 cfg: PairingConfig) -> tuple[list[PairChoice], Counter]:
    """Pairs of every shot (round-robin over shots up to the per-video cap, spread evenly over the
    video when the cap cannot take a pair from every shot) and a count of rejection reasons."""
    why: Counter = Counter()
    per_shot: list[list[PairChoice]] = []
    pos = {int(i): k for k, i in enumerate(grid_index)}
    for shot in shots.shots:
        if shot.end_s - shot.start_s < cfg.min_shot_s:
            why["short_shot"] += 1
            continue
        cands = []
        lo, hi = shot.start_frame + cfg.boundary_margin_frames, shot.end_frame - cfg.boundary_margin_frames
        for i in grid_index[(grid_index >= lo) & (grid_index <= hi)]:
            reason = _frame_problem(int(i), shots, grid_images[pos[int(i)]], cfg)
            if reason:
                why[reason] += 1
            else:
                cands.append(int(i))
        per_shot.append(_pairs_in_shot(shot, cands, pos, grid_images, times_s, cfg, why))
    chosen: list[PairChoice] = []
    for rank in range(cfg.max_pairs_per_shot):
        ready = [pairs[rank] for pairs in per_shot if rank < len(pairs)]
        budget = cfg.max_pairs_per_video - len(chosen)
        if budget <= 0 or not ready:
            break
        if len(ready) > budget:  # spread over the whole video: the first shots alone would bias long videos
            ready = [ready[k] for k in np.unique(np.round(np.linspace(0, len(ready) - 1, budget)).astype(int))]
        chosen += ready
    chosen.sort(key=lambda p: (p.shot, p.pair))
    return chosen, why


def _frame_problem(i: int, shots: Shots, img: np.ndarray, cfg: PairingConfig) -> str | None:
    if i in shots.unusable:
        return shots.unusable[i]  # black / blown / transient / fade
    b = shots.brightness.get(i, float(img.mean()) / 255)
    if b < cfg.min_brightness:
        return "dark"
    if b > cfg.max_brightness:
        return "bright"
    if blur_score(img) < cfg.min_blur:
        return "blurry"
    return None


def _pairs_in_shot(shot, cands: list[int], pos: dict, images: list, times_s: np.ndarray, cfg: PairingConfig,
                   why: Counter) -> list[PairChoice]:
    """Most-changing moments first (a cheap image difference ranks the A frames), then numbered in time order."""
    chosen: list[tuple[int, int, dict]] = []
    used: set[int] = set()  # a frame serves one pair only: repeated frames make near-duplicate samples
    tries_before = sum(why.values())
    for a in sorted(cands, key=lambda a: (-_change(a, cands, pos, images, times_s, cfg), a)):
        if len(chosen) >= cfg.max_pairs_per_shot or sum(why.values()) - tries_before >= cfg.max_failed_tries_per_shot:
            break
        if a in used or any(abs(times_s[a] - times_s[c[0]]) < cfg.min_pair_spacing_s for c in chosen):
            continue
        found = _best_b(a, [c for c in cands if c not in used], pos, images, times_s, cfg, why)
        if found is None:
            continue
        b, facts = found
        facts.update(gap_s=round(float(times_s[b] - times_s[a]), 4), shot_start_s=round(shot.start_s, 4),
                     shot_end_s=round(shot.end_s, 4), shot_start_frame=shot.start_frame, shot_end_frame=shot.end_frame,
                     shot_fade_in=shot.fade_in, shot_fade_out=shot.fade_out)
        chosen.append((a, b, facts))
        used.update((a, b))
    chosen.sort(key=lambda c: c[0])
    return [PairChoice(shot.shot, k, a, b, facts) for k, (a, b, facts) in enumerate(chosen)]


def _change(a: int, cands: list[int], pos: dict, images: list, times_s: np.ndarray, cfg: PairingConfig) -> float:
    """How much the picture changes from `a` to the frame one target gap later (0 when there is none)."""
    later = [b for b in cands if cfg.min_gap_s - 1e-6 <= times_s[b] - times_s[a] <= cfg.max_gap_s + 1e-6]
    if not later:
        return 0.0
    b = min(later, key=lambda x: (abs(times_s[x] - times_s[a] - cfg.target_gap_s), x))
    return mean_abs_diff(images[pos[a]], images[pos[b]])


def _best_b(a: int, cands: list[int], pos: dict, images: list, times_s: np.ndarray, cfg: PairingConfig,
            why: Counter) -> tuple[int, dict] | None:
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
        verdict, facts = _judge(ia, ib, cfg)
        if verdict is None:
            return b, facts
        why[verdict] += 1
        if verdict == "static" or verdict == "near_duplicate":
            gap = min(cfg.max_gap_s, 2 * (times_s[b] - times_s[a]))
        elif verdict == "too_much_motion":
            gap = max(cfg.min_gap_s, 0.5 * (times_s[b] - times_s[a]))
        else:
            break  # an exposure jump will not go away with another gap
    return None


def _judge(ia: np.ndarray, ib: np.ndarray, cfg: PairingConfig) -> tuple[str | None, dict]:
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
                 blur_a=round(blur_score(ia), 2), blur_b=round(blur_score(ib), 2))
    return None, facts
