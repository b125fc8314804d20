"""Hours-long videos in windows: each window is scanned, cut into shots and paired on its own.

A video longer than `window_s x 1.5` is split at frame boundaries into equal windows of about
`window_s`. Ingest emits one row per window; its id is the video's content id plus the window
(`{id}-w{k:03d}`), so resume, the duplicate check and the pair keys treat each window as a
video of its own: a finished window is skipped, a window that failed for good is not retried,
a window cut short by a crash is redone, and its neighbours are untouched. What a row holds
(thumbnails, grid images, kept frames) therefore grows with the window, not with the file,
and the scan's grid step stays the configured one. A shot that crosses a window boundary is
two shots: a pair never spans windows (it loses at most `max_gap_s` of candidates a window).
The per-video pair cap is shared out by length, so pairs come from the whole video; a window
whose share is none (more windows than the cap) is not emitted, so not scanned either.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SEP = "-w"  # between a video's content id (hex) and its window number: a safe key part as is


@dataclass(frozen=True)
class Window:
    index: int
    of: int
    first_frame: int
    last_frame: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_row(cls, value: Any) -> "Window | None":
        if not value or (isinstance(value, float) and math.isnan(value)):
            return None
        return cls(**json.loads(value))

    def pair_cap(self, cap: int, num_frames: int) -> int:
        """This window's part of the per-video pair cap, by its share of the frames. The parts add up
        to `cap` whatever the number of windows: with more windows than `cap`, some get none (spread
        evenly) and ingest does not emit them, so an hours-long video never yields more than `cap`
        pairs because it has many windows (they used to get one each: 24 pairs from 24 windows)."""
        n = max(num_frames, 1)
        return round(cap * (self.last_frame + 1) / n) - round(cap * self.first_frame / n)


def plan_windows(times_s: np.ndarray, window_s: float) -> list[Window]:
    """Equal windows of about `window_s` over a video's frame times; one window (the whole
    video) when it is under 1.5 windows long or `window_s` is 0."""
    n = len(times_s)
    duration = float(times_s[-1] - times_s[0]) if n else 0.0
    if window_s <= 0 or duration <= 1.5 * window_s:
        return [Window(0, 1, 0, n - 1)]
    count = math.ceil(duration / window_s)
    edges = np.searchsorted(times_s, times_s[0] + duration * np.arange(count + 1) / count, side="left")
    edges[-1] = n
    return [Window(k, count, int(edges[k]), int(edges[k + 1]) - 1) for k in range(count)]


def window_id(video_id: str, window: Window) -> str:
    return video_id if window.of == 1 else f"{video_id}{SEP}{window.index:03d}"


def is_window_id(video_id: str | None) -> bool:
    """The id of one window of a long video (`{video_id}-w003`); content ids are hex."""
    return bool(video_id) and SEP in video_id


def window_id_mask(video_ids):
    """`is_window_id` over an Arrow array of ids, for tables too big for a Python loop (null: False)."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.match_substring(video_ids, SEP), False)
