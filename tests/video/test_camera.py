"""Camera-motion class on generated clips whose camera motion is known (pairs' facts, via the real stages)."""
from __future__ import annotations

import json

import pytest

from datagen.video.pairing import PairingConfig
from datagen.video.synthetic import Segment, write_video
from schemas.columns import FACTS, FAILED_STAGE, VIDEO_URI, batch_to_rows, rows_to_batch
from stages.ingest import IngestStage
from stages.pairs import PairsConfig, PairsStage
from stages.shots import ShotsStage

CLIPS = {  # (expected class, segment): content sliding left is the camera panning right
    "pan_right": ("pan_right", Segment("pan", 72, speed_px=1.5, seed=1)),
    "pan_left": ("pan_left", Segment("pan", 72, speed_px=-1.5, seed=2)),
    "zoom_in": ("zoom_in", Segment("zoom", 72, speed_px=4, seed=3)),
    "zoom_out": ("zoom_out", Segment("zoom", 72, speed_px=-4, seed=4)),
    # a still camera and an object covering half or more of the frame height: RANSAC's inliers
    # drop near or under half, which used to read as "the camera moves irregularly"
    "big_object": ("static", Segment("object", 72, speed_px=1.5, seed=5, object_frac=0.8)),  # (no wrap round)
    "big_object_slow": ("static", Segment("object", 72, speed_px=1.5, seed=6, object_frac=0.55)),
    # a handheld camera swaying back and forth: small net motion between A and B, a long path
    # through the frames between them (pairing.py's shake check)
    "handheld": ("complex", Segment("shake", 72, speed_px=4, seed=7)),
}


@pytest.fixture(scope="module")
def camera_rows(tmp_path_factory):
    d = tmp_path_factory.mktemp("camera")
    paths = {name: str(d / f"{name}.mp4") for name in CLIPS}
    for name, (_, seg) in CLIPS.items():
        write_video(paths[name], [seg])
    batch = rows_to_batch([{VIDEO_URI: p} for p in paths.values()])
    for stage in (IngestStage(), ShotsStage(), PairsStage(PairsConfig(pairing=PairingConfig(max_pairs_per_video=99)))):
        batch = stage(batch)
    rows = batch_to_rows(batch)
    return {name: [json.loads(r[FACTS]) for r in rows if r[VIDEO_URI] == p and r[FAILED_STAGE] is None]
            for name, p in paths.items()}


def test_the_camera_class_is_right_on_clips_with_known_motion(camera_rows):
    right = total = 0
    for name, (expected, _) in CLIPS.items():
        assert camera_rows[name], f"{name}: no pair"
        right += sum(f["camera_motion"] == expected for f in camera_rows[name])
        total += len(camera_rows[name])
    assert right >= 0.95 * total, {n: [f["camera_motion"] for f in fs] for n, fs in camera_rows.items()}


def test_a_still_camera_with_a_large_moving_object_is_static_whatever_the_inliers(camera_rows):
    facts = camera_rows["big_object"]
    assert all(f["camera_motion"] == "static" and f["object_motion_area"] > 0.1 for f in facts), facts
    assert min(f["camera_inliers"] for f in facts) < 0.5  # under the old "complex" bound, yet the camera is still


def test_a_handheld_sway_is_complex_not_static_or_a_pan(camera_rows):
    facts = camera_rows["handheld"]
    assert facts and all(f["camera_motion"] == "complex" for f in facts), [f["camera_motion"] for f in facts]
