"""Decoding: the cheap scan, the two full-quality decoders, rotation, output size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datagen.video.decode import ScanConfig, decode_frames, fit_size, scan
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
    pyav = decode_frames(path, info, wanted, 512, 1024, decoder="pyav")
    ref = decode_frames(path, info, wanted, 512, 1024, decoder="decord")
    assert sorted(pyav) == sorted(ref) == sorted(wanted)
    for i in wanted:
        assert np.array_equal(pyav[i], ref[i]), i


def test_scan_skips_non_reference_frames_and_uses_lowres(tmp_path):
    info = probe(str(ASSETS / "Megamind.avi"))  # MPEG-4 part 2 with B-frames: both savings apply
    seen = scan(str(ASSETS / "Megamind.avi"), info, ScanConfig())
    assert seen.decoded_frames < info.num_frames / 2
    assert seen.grid_images[0].shape == (128, 175)  # analysis size from a 1/4-size decode
    full = scan(str(ASSETS / "Megamind.avi"), info, ScanConfig(skip_nonref=False, lowres=0))
    assert full.decoded_frames == info.num_frames


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
