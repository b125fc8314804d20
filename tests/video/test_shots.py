"""Shot boundaries against ground truth: synthetic clips with known cuts, and the real opencv-doc clips."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datagen.video.cuts import CutConfig, detect
from datagen.video.decode import ScanConfig, decode_window, scan
from datagen.video.probe import probe
from datagen.video.synthetic import Segment, standard_clip, write_video

ASSETS = Path(__file__).resolve().parents[2] / "datagen" / "assets" / "videos"


def run_shots(path, scan_cfg=ScanConfig()):
    info = probe(str(path))
    seen = scan(str(path), info, scan_cfg)
    shots = detect(seen.index, seen.thumbs, info.times_s, CutConfig(),
                   refine=lambda a, b: decode_window(str(path), info, scan_cfg, a, b))
    return info, seen, shots


def assert_cuts_match(found, truth):
    assert len(found) == len(truth), (found, truth)
    for f, t in zip(found, truth):
        assert abs(f - t) <= 1, (found, truth)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return standard_clip(tmp_path_factory.mktemp("clips") / "standard.mp4", scale=2)  # 2nd round: look-alike cuts


def test_synthetic_cuts_black_fade_and_flash(clip):
    info, seen, shots = run_shots(clip.path)
    assert_cuts_match(shots.cuts, clip.cuts)
    assert seen.decoded_frames < clip.num_frames  # non-reference frames were skipped
    for f in clip.black_frames:
        assert shots.unusable.get(f) == "black"
    # the fade from black: every decoded frame of the ramp is unusable, and the shot says it fades in
    ramp = [i for i in seen.index if 0 < i < 10]
    assert ramp and all(shots.unusable.get(int(i)) in ("black", "fade") for i in ramp)
    assert shots.shots[0].fade_in
    for f in clip.flash_frames:
        assert shots.unusable.get(f) in ("blown", "transient")
    # the flash frame did not split the object shot
    starts = [s.start_frame for s in shots.shots]
    assert not any(abs(s - f) <= 1 for s in starts for f in clip.flash_frames)


def test_cut_refinement_is_exact_when_the_scan_skips_frames(clip):
    _, _, fast = run_shots(clip.path)
    _, _, full = run_shots(clip.path, ScanConfig(skip_nonref=False))
    assert fast.cuts == full.cuts == clip.cuts


def test_cuts_away_from_keyframes_are_refined_exactly(tmp_path):
    """Encoders usually start a group of pictures at a cut, and the scan decodes every frame
    there; with scene-cut detection off in the encoder the cuts fall mid-group, where the
    scan skipped frames and must decode the window again to place them."""
    clip = standard_clip(tmp_path / "nosc.mp4", codec_options={"x264-params": "scenecut=0:keyint=500:b-adapt=0"})
    info, seen, shots = run_shots(clip.path)
    assert len(info.keyframe_pts) == 1
    decoded = set(seen.index.tolist())
    assert any(c - 1 not in decoded or c not in decoded for c in clip.cuts)  # the scan skipped a frame at a cut
    assert shots.cuts == clip.cuts


def test_variable_frame_rate_clip(tmp_path):
    truth = write_video(tmp_path / "vfr.mkv", [Segment("object", 40, seed=1), Segment("pan", 40, speed_px=1.5, seed=2),
                                                Segment("object", 30, seed=3)], vfr_jitter=0.45)
    info, _, shots = run_shots(truth.path)
    assert info.vfr and info.num_frames == truth.num_frames
    np.testing.assert_allclose(info.times_s, np.array(truth.times_s) - truth.times_s[0], atol=2e-3)
    assert_cuts_match(shots.cuts, truth.cuts)
    assert shots.shots[1].start_s == pytest.approx(truth.times_s[truth.cuts[0]], abs=0.1)


def test_black_gap_splits_shots_without_counting_a_cut(tmp_path):
    truth = write_video(tmp_path / "gap.mp4", [Segment("object", 30, seed=1), Segment("black", 6),
                                                Segment("object", 30, seed=2)])
    _, _, shots = run_shots(truth.path)
    assert shots.cuts == []
    assert len(shots.shots) == 2
    assert shots.shots[0].end_frame < 30 <= 36 <= shots.shots[1].start_frame


@pytest.mark.parametrize("name, cuts", [("Megamind.avi", [98, 154, 200]), ("box.mp4", []), ("tree.avi", [])])
def test_real_clips(name, cuts):
    info, _, shots = run_shots(ASSETS / name)
    assert_cuts_match(shots.cuts, cuts)
    assert len(shots.shots) == len(cuts) + 1
    if name == "Megamind.avi":
        assert shots.unusable.get(0) == "black"  # it opens on a black frame
        assert shots.shots[0].start_frame == 1
    if name == "tree.avi":
        assert info.vfr  # 68 frames spread over 30 s at irregular intervals


@pytest.mark.parametrize("f", [2, 3, 4])
def test_block_means_equal_the_float_mean_of_each_block(f):
    """The gradual test's small images: integer sums of strided slices, the same bits as a float32 mean."""
    from datagen.video.cuts import BLOCK_FRAMES, _block_means

    thumbs = np.random.default_rng(f).integers(0, 256, (BLOCK_FRAMES + 3, 48, 64), dtype=np.uint8)
    h, w = 48 // f, 64 // f
    blocks = thumbs[:, :h * f, :w * f].astype(np.float32).reshape(-1, h, f, w, f).mean((2, 4))
    assert np.array_equal(_block_means(thumbs, f), blocks.reshape(len(thumbs), -1))
