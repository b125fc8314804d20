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
