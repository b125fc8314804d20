"""Hours-long videos in windows (datagen/video/windows.py): rows, ids, the grid step, pairs over
the whole length, and what resume makes of a window."""
from __future__ import annotations

import json

import numpy as np
import pytest

from datagen.io.storage import Location
from datagen.pipeline.progress import ResumeState
from datagen.video.synthetic import Segment, write_video
from datagen.video.windows import Window, plan_windows
from schemas import columns as C
from stages.ingest import WINDOW, IngestConfig, IngestStage
from stages.pairs import PairsStage
from stages.shots import SHOTS, ShotsStage, load_shots


def test_windows_cover_every_frame_once_and_share_the_pair_cap():
    times = np.arange(0, 7200, 0.25)  # two hours at 4 fps
    windows = plan_windows(times, 600)
    assert len(windows) == 12 and windows[0].first_frame == 0 and windows[-1].last_frame == len(times) - 1
    assert all(b.first_frame == a.last_frame + 1 for a, b in zip(windows, windows[1:]))
    assert sum(w.pair_cap(16, len(times)) for w in windows) == 16
    assert plan_windows(times[:3600], 600) == [Window(0, 1, 0, 3599)]  # 15 minutes: under 1.5 windows
    assert len(plan_windows(times, 0)) == 1  # 0: never split


@pytest.fixture(scope="module")
def half_hour(tmp_path_factory):
    """30 minutes at 4 fps, 128x72: one-minute shots of pan, object and zoom (the encode takes ~1 s)."""
    path = tmp_path_factory.mktemp("long") / "half_hour.mp4"
    kinds = ("pan", "object", "zoom")
    write_video(path, [Segment(kinds[k % 3], 240, speed_px=4 if k % 3 == 2 else 1.5, seed=k) for k in range(30)],
                width=128, height=72, fps=4)
    rows = C.batch_to_rows(IngestStage(IngestConfig(window_s=600))(C.rows_to_batch([{C.VIDEO_URI: str(path)}])))
    shots, pairs = [], []
    for row in rows:  # one window at a time, as the fused CPU stage gets them (batch_size 1)
        s = ShotsStage()(C.rows_to_batch([row]))
        shots += C.batch_to_rows(s)
        pairs += C.batch_to_rows(PairsStage()(s))
    return rows, shots, pairs


def test_a_half_hour_video_is_three_windows_with_ids_of_their_own(half_hour):
    rows, _, _ = half_hour
    assert [json.loads(r[WINDOW])["index"] for r in rows] == [0, 1, 2]
    ids = [r[C.VIDEO_ID] for r in rows]
    assert len(set(ids)) == 3 and all(i.startswith(ids[0][:-5]) and i[-5:] == f"-w{k:03d}" for k, i in enumerate(ids))


def test_each_window_is_scanned_on_the_configured_grid_alone(half_hour):
    rows, shots, _ = half_hour
    for row, scanned in zip(rows, shots):
        w = Window.from_row(row[WINDOW])
        _, grid, images, _ = load_shots(scanned)
        assert w.first_frame <= grid.min() and grid.max() <= w.last_frame  # nothing of the other windows
        # every 0.5 s of the 10-minute window (2 frames at 4 fps; a skipped B-frame's neighbour stands in
        # for it, 1 or 3 apart): the configured step, not one set by the video's 30 minutes
        assert 1190 <= len(grid) == len(images) <= 1201 and np.median(np.diff(grid)) == 2 and np.diff(grid).max() <= 3
        assert all(w.first_frame <= s["start_frame"] <= s["end_frame"] <= w.last_frame
                   for s in json.loads(scanned[SHOTS])["shots"])


def test_pairs_come_from_the_whole_length_within_the_cap_and_never_span_windows(half_hour):
    rows, _, pairs = half_hour
    ok = [p for p in pairs if p[C.FAILED_STAGE] is None]
    assert len(ok) == 16  # the per-video cap, shared out by length
    assert all(sum(lo <= p[C.T_A_S] < lo + 600 for p in ok) >= 4 for lo in (0, 600, 1200))
    for p in ok:
        w = Window.from_row(p[WINDOW])
        assert w.first_frame <= p[C.FRAME_A] < p[C.FRAME_B] <= w.last_frame


def test_a_window_that_failed_for_good_is_done_and_its_video_is_not(tmp_path):
    from tests.pipeline.test_sink_resume import write

    loc = Location.parse(str(tmp_path))
    failed = {C.VIDEO_URI: "file:///v/long.mp4", C.VIDEO_ID: "abc-w001", C.FAILED_STAGE: "pairs",
              C.FAILED_REASON: "no_pairs", C.FAILED_DETAIL: "a static window"}
    write(loc, [failed])
    state = ResumeState.load(loc)
    assert "file:///v/long.mp4" not in state.failed_uris and state.done_videos == {"abc-w001"}
    assert state.videos_done(["file:///v/long.mp4"] * 2, ["abc-w001", "abc-w002"]) == [True, False]


def test_a_window_that_failed_transiently_is_pending_while_its_neighbours_are_done(tmp_path):
    from datagen.pipeline.outcome import run_outcome
    from tests.pipeline.test_sink_resume import assembled, write

    loc = Location.parse(str(tmp_path))
    done = [dict(r, **{C.VIDEO_ID: "abc-w000", C.VIDEO_URI: "file:///v/long.mp4"}) for r in assembled([0])]
    write(loc, done, prefix="001abcd-00000-w0000000a-")
    lost = {C.VIDEO_URI: "file:///v/long.mp4", C.VIDEO_ID: "abc-w001", C.FAILED_STAGE: "shots",
            C.FAILED_REASON: "storage_error", C.FAILED_DETAIL: "connection reset"}
    write(loc, [lost], prefix="001abcd-00001-w0000000b-")
    assert run_outcome(loc)["pending_retry"] == {"storage_error": 1}  # not settled by window 0's rows
    assert not ResumeState.load(loc).is_video_done("abc-w001", "file:///v/long.mp4")


def test_more_windows_than_the_cap_share_it_without_exceeding_it():
    times = np.arange(0, 7200, 0.25)  # two hours in 3-minute windows: 40 windows for a cap of 16
    windows = plan_windows(times, 180)
    shares = [w.pair_cap(16, len(times)) for w in windows]
    assert len(windows) == 40 and sum(shares) == 16 and set(shares) == {0, 1}
    given = [w.first_frame / len(times) for w, n in zip(windows, shares) if n]
    assert given[0] < 0.05 and given[-1] > 0.9 and max(np.diff(given)) < 0.1  # spread over the whole length


def test_ingest_emits_only_the_windows_that_get_a_share_of_the_cap(tmp_path):
    path = tmp_path / "twelve.mp4"  # 12 minutes at 1 fps in 1-minute windows, a cap of 4: 4 rows
    write_video(path, [Segment("pan", 720, speed_px=1.0, seed=0)], width=64, height=48, fps=1)
    rows = C.batch_to_rows(IngestStage(IngestConfig(window_s=60, max_pairs_per_video=4))(
        C.rows_to_batch([{C.VIDEO_URI: str(path)}])))
    windows = [Window.from_row(r[WINDOW]) for r in rows]
    assert len(rows) == 4 and all(w.of == 12 for w in windows)
    assert [w.index for w in windows] == sorted({w.index for w in windows}) and windows[-1].index >= 9
