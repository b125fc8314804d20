"""A slow pan of fine texture is one picture moving, not a dissolve: no gradual transition,
and the cut beside it stays a cut."""
from __future__ import annotations

from datagen.video.cuts import CutConfig, detect
from datagen.video.decode import ScanConfig, scan
from datagen.video.probe import probe
from datagen.video.synthetic import Segment, write_video


def test_slow_textured_pans_are_motion_not_transitions(tmp_path):
    # the shots of the 16x benchmark clip whose 1.5 px/frame pans were taken for dissolves
    truth = write_video(tmp_path / "pans.mp4", [Segment("pan", 48, speed_px=1.5, seed=42),
                                                 Segment("object", 49, speed_px=4.0, seed=43, flash_at=24),
                                                 Segment("pan", 40, speed_px=-1.5, seed=44)], width=640, height=360)
    info = probe(truth.path)
    seen = scan(truth.path, info, ScanConfig())  # the pipeline's scan: reference frames, and all near keyframes

    def found(cfg: CutConfig):
        return detect(seen.index, seen.thumbs, info.times_s, cfg)

    blind = found(CutConfig(gradual_moved_max_change=-1.0))  # without the camera path: the pans look like blends
    assert blind.transitions, "the clip no longer shows the false dissolves this test is about"
    shots = found(CutConfig())
    assert shots.transitions == []
    assert shots.cuts == truth.cuts == [48, 97]
    assert not any(v == "transition" for v in shots.unusable.values())
