"""Pair choice on hand-made analysis images: the per-video cap spreads pairs over the video."""
from __future__ import annotations

import cv2
import numpy as np

from datagen.video.cuts import Shot, Shots
from datagen.video.pairing import PairingConfig, choose_pairs

FPS, GRID = 24, 12  # a grid frame every 0.5 s


def panning_shots(n_shots: int, frames_per_shot: int = 96):
    """`n_shots` shots of a smooth texture sliding 1 px per frame, and their grid frames."""
    rng = np.random.default_rng(0)
    shots, index, images = [], [], []
    for s in range(n_shots):
        texture = cv2.GaussianBlur(rng.integers(0, 255, (128, 400), dtype=np.uint8), (0, 0), 3)
        texture = cv2.normalize(texture, None, 20, 235, cv2.NORM_MINMAX)
        first = s * frames_per_shot
        shots.append(Shot(s, first, first + frames_per_shot - 1, first / FPS, (first + frames_per_shot - 1) / FPS))
        for f in range(first, first + frames_per_shot, GRID):
            index.append(f)
            images.append(np.ascontiguousarray(texture[:, f - first:f - first + 171]))
    times = np.arange(n_shots * frames_per_shot) / FPS
    return Shots(shots=shots, cuts=[s.start_frame for s in shots[1:]]), np.array(index), images, times


def test_the_per_video_cap_spreads_pairs_over_the_whole_video():
    shots, index, images, times = panning_shots(10)
    cfg = PairingConfig(max_pairs_per_shot=1, max_pairs_per_video=4)
    chosen, why = choose_pairs(shots, index, images, times, cfg)
    assert [p.shot for p in chosen] == [0, 3, 6, 9], why
    everything, _ = choose_pairs(shots, index, images, times, PairingConfig(max_pairs_per_shot=1))
    assert [p.shot for p in everything] == list(range(10))  # under the cap every shot gives its pair
    for p in chosen:
        assert shots.shots[p.shot].start_frame <= p.frame_a < p.frame_b <= shots.shots[p.shot].end_frame


def test_a_binding_cap_searches_no_pair_it_would_drop(monkeypatch):
    """Ten shots with room for four pairs each and a cap of four: one search per shot, not four."""
    import datagen.video.pairing as pairing

    calls = []
    real = pairing.motion_facts
    monkeypatch.setattr(pairing, "motion_facts", lambda *a, **k: calls.append(1) or real(*a, **k))
    shots, index, images, times = panning_shots(10, frames_per_shot=240)  # 10 s shots: four pairs fit in each
    every, _ = choose_pairs(shots, index, images, times, PairingConfig(max_pairs_per_video=10**6))
    searched_all = len(calls)
    calls.clear()
    capped, _ = choose_pairs(shots, index, images, times, PairingConfig(max_pairs_per_video=4))
    assert len(every) == 40 and len(capped) == 4
    assert [p.shot for p in capped] == [0, 3, 6, 9]
    assert len(calls) <= searched_all / 3, (len(calls), searched_all)
    found = {(p.shot, p.frame_a, p.frame_b) for p in every}
    assert all((p.shot, p.frame_a, p.frame_b) in found for p in capped)  # the pairs a full search finds


def test_flow_does_not_depend_on_what_the_process_computed_before():
    """OpenCV's DIS gives a new instance's first flow slightly differently: a video's facts must
    not depend on whether it was the first one a worker processed."""
    from datagen.video import motion

    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 255, (300, 400), dtype=np.uint8), (7, 7), 2)
    a, b = base[10:74, 20:105].copy(), base[12:76, 23:108].copy()
    other = rng.integers(0, 255, (2, 64, 85), dtype=np.uint8)
    motion._DIS.clear()
    first = motion.step_motion(a, b)
    motion.step_motion(other[0], other[1])
    assert motion.step_motion(a, b) == first
