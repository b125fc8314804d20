"""Decoding: the cheap scan, the two full-quality decoders, rotation, output size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datagen.video.decode import KEEP_FORMATS, KeptFrames, ScanConfig, decode_frames, fit_size, sample_rgb, scan
from datagen.video.probe import probe
from datagen.video.synthetic import Segment, write_video

ASSETS = Path(__file__).resolve().parents[2] / "datagen" / "assets" / "videos"


def test_fit_size_never_upscales_and_caps_the_long_side():
    assert fit_size(1920, 1080, 512, 1024) == (910, 512)
    assert fit_size(320, 240, 512, 1024) == (320, 240)
    assert fit_size(4000, 1000, 512, 1024) == (1024, 256)
    assert fit_size(1080, 1920, 512, 1024) == (512, 910)


@pytest.mark.parametrize("name", ["synthetic", "Megamind.avi"])
def test_pyav_and_decord_give_identical_frames(name, tmp_path):
    # (not box.mp4: one of its packets yields no picture and decord's indices drift by one after it)
    path = write_video(tmp_path / "s.mp4", [Segment("pan", 60, speed_px=2, seed=1)]).path if name == "synthetic" \
        else str(ASSETS / name)
    info = probe(path)
    seen = scan(path, info, ScanConfig())
    wanted = seen.grid_index[1::5].tolist()  # frames the scan saw, as the pairs stage asks for them
    # at source size (no scaling, which the two do differently) the decoders must agree exactly
    pyav = decode_frames(path, info, wanted, 4096, 4096, decoder="pyav")
    ref = decode_frames(path, info, wanted, 4096, 4096, decoder="decord")
    assert sorted(pyav) == sorted(ref) == sorted(wanted)
    for i in wanted:
        assert np.array_equal(pyav[i], ref[i]), i


def test_scan_skips_non_reference_frames(tmp_path):
    info = probe(str(ASSETS / "Megamind.avi"))  # MPEG-4 part 2 with B-frames
    seen = scan(str(ASSETS / "Megamind.avi"), info, ScanConfig())
    assert seen.decoded_frames < info.num_frames / 2
    assert seen.grid_images[0].shape == (128, 175)
    full = scan(str(ASSETS / "Megamind.avi"), info, ScanConfig(skip_nonref=False))
    assert full.decoded_frames == info.num_frames


SYNTHETIC_FORMATS = {  # kept in their own format (full-range JPEG too), or as RGB (10-bit, 4:2:2)
    "mjpeg.avi": dict(codec="mjpeg", pix_fmt="yuvj420p"),
    "10bit.mp4": dict(pix_fmt="yuv420p10le"),
    "422.mp4": dict(pix_fmt="yuv422p"),
}


def clip_path(name: str, tmp_path) -> str:
    """A bundled clip, or a short synthetic pan in one of SYNTHETIC_FORMATS."""
    if name in SYNTHETIC_FORMATS:
        return write_video(tmp_path / name, [Segment("pan", 48, speed_px=2, seed=1)], **SYNTHETIC_FORMATS[name]).path
    return str(ASSETS / name)


@pytest.mark.parametrize("name", ["box.mp4", "Megamind.avi", "tree.avi", *SYNTHETIC_FORMATS])
def test_kept_frames_equal_a_fresh_full_quality_decode(name, tmp_path):
    """The pairs stage uses the scan's copies instead of decoding: they must be the very same pixels."""
    path = clip_path(name, tmp_path)
    info = probe(path)
    seen = scan(path, info, ScanConfig(frame_short_side_px=160, frame_max_long_side_px=400))
    assert sorted(seen.kept) == seen.grid_index.tolist()
    wanted = seen.grid_index[1:-1:3].tolist()
    fresh = decode_frames(path, info, wanted, 160, 400)
    for i in wanted:
        kept = sample_rgb(seen.kept[i], info.rotation_deg)
        assert kept.shape[:2] == fresh[i].shape[:2] and min(kept.shape[:2]) <= 160
        assert np.array_equal(kept, fresh[i]), i


def test_scan_keeps_frames_up_to_its_memory_bound():
    path = str(ASSETS / "box.mp4")
    info = probe(path)
    one = scan(path, info, ScanConfig(keep_frames_mb=1))  # 640x480 4:2:0 is 0.44 MiB: three fit under 1 MiB
    assert sorted(one.kept) == one.grid_index[:3].tolist()
    assert len(scan(path, info, ScanConfig(keep_frames=False)).kept) == 0


def test_rotated_stream_decodes_upright(tmp_path):
    plain = write_video(tmp_path / "plain.mp4", [Segment("object", 24, seed=1)])
    turned = write_video(tmp_path / "turned.mp4", [Segment("object", 24, seed=1)], rotation_deg=270)
    info_p, info_t = probe(plain.path), probe(turned.path)
    assert info_t.rotation_deg == 270 and (info_t.width, info_t.height) == (320, 192)
    for decoder in ("pyav", "decord"):
        a = decode_frames(plain.path, info_p, [5], 512, 1024, decoder=decoder)[5]
        b = decode_frames(turned.path, info_t, [5], 512, 1024, decoder=decoder)[5]
        assert b.shape == (320, 192, 3)
        assert np.array_equal(np.rot90(a, 3), b)  # 270 degrees counter-clockwise


@pytest.mark.parametrize("name", ["Megamind.avi", *SYNTHETIC_FORMATS])
def test_kept_frames_at_source_size_are_pyavs_own_rgb(name, tmp_path):
    """Keeping a frame (own pixel format, colour space and range carried along) and converting
    it later gives exactly the RGB of converting the decoded frame at once."""
    import av

    from datagen.video.decode import _frame_index

    path = clip_path(name, tmp_path)
    info = probe(path)
    seen = scan(path, info, ScanConfig(frame_short_side_px=4096, frame_max_long_side_px=4096))
    with av.open(path) as container:
        direct = {_frame_index(info, f): f.to_ndarray(format="rgb24") for f in container.decode(video=0)}
    for i, kept in seen.kept.items():
        assert np.array_equal(sample_rgb(kept, 0), direct[i]), i


@pytest.mark.parametrize("fmt", sorted(KEEP_FORMATS))
def test_kept_frames_hold_pyavs_own_array_of_every_kept_format(fmt):
    """KeptFrames copies planes' rows itself (no array per frame): the bytes must be the array
    PyAV's to_ndarray gives, which sample_rgb turns back into a frame."""
    import av

    rgb = np.random.default_rng(0).integers(0, 256, (48, 62, 3), np.uint8)  # 62 px: rows padded in the frames
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=fmt)
    kept = KeptFrames(limit_bytes=2**20)
    for idx in (3, 9):
        kept.add(idx, frame, (62, 48))
    expected = frame.to_ndarray()
    assert list(kept) == [3, 9] and kept.format == fmt
    for idx in (3, 9):
        assert np.array_equal(kept[idx].pixels, expected)
    assert np.array_equal(sample_rgb(kept[9], 0), frame.to_ndarray(format="rgb24"))


def test_kept_frames_of_a_stream_that_changes_size_midway_are_none():
    import av

    kept = KeptFrames(limit_bytes=2**20)
    for idx, width in ((0, 64), (5, 64), (9, 80)):
        kept.add(idx, av.VideoFrame(width, 48, "yuv420p"), (width, 48))
    assert len(kept) == 0 and list(kept) == [] and not kept.wants_more()
