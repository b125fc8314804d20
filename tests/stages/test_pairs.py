"""ingest -> shots -> pairs on synthetic clips with ground truth, the real clips, and bad inputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from datagen.media import decode_image
from datagen.video.decode import ScanConfig
from datagen.video.synthetic import Segment, corrupt_packets, standard_clip, write_video
from schemas.columns import (FACTS, FAILED_REASON, FAILED_STAGE, FRAME_A, FRAME_B, HEIGHT, IMAGE_A, IMAGE_B, PAIR,
                             SHOT, VIDEO_ID, VIDEO_URI, WIDTH, batch_to_rows, rows_to_batch)
from stages.ingest import IngestStage, source_rows
from stages.pairs import PairsStage
from stages.shots import ShotsStage

ASSETS = Path(__file__).resolve().parents[2] / "datagen" / "assets" / "videos"
REAL_CUTS = {"Megamind.avi": [98, 154, 200], "box.mp4": [], "tree.avi": []}


def run(uris) -> list[dict]:
    batch = rows_to_batch([{VIDEO_URI: str(u)} for u in uris])
    for stage in (IngestStage(), ShotsStage(), PairsStage()):
        batch = stage(batch)
    return batch_to_rows(batch)


def ok(rows):
    return [r for r in rows if r[FAILED_STAGE] is None]


def segment_of(frame, segments):
    return next(i for i, (_, a, b) in enumerate(segments) if a <= frame < b)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return standard_clip(d / "standard.mp4"), standard_clip(d / "rotated.mp4", rotation_deg=90)


@pytest.fixture(scope="module")
def synthetic_rows(synthetic):
    return run([t.path for t in synthetic])


def test_synthetic_pairs_respect_ground_truth(synthetic, synthetic_rows):
    clip = synthetic[0]
    rows = [r for r in ok(synthetic_rows) if r[VIDEO_URI] == clip.path]
    assert rows
    kinds = {r2: [] for r2 in range(len(clip.segments))}
    for r in rows:
        sa, sb = segment_of(r[FRAME_A], clip.segments), segment_of(r[FRAME_B], clip.segments)
        assert sa == sb, f"pair {r[FRAME_A]}->{r[FRAME_B]} crosses a cut"
        assert r[FRAME_A] not in clip.flash_frames and r[FRAME_B] not in clip.flash_frames
        assert r[FRAME_A] >= 12, "fade-in/black frames are never used"
        kinds[sa].append(json.loads(r[FACTS]))
    assert kinds[0] == [], "the static shot gives no pair"
    pans = kinds[1] + kinds[3]
    assert pans and all(f["camera_motion"].startswith("pan_") for f in pans)
    assert all(f["camera_motion"] == "pan_right" for f in kinds[1])  # content slides left
    assert kinds[2] and all(f["camera_motion"] == "static" and f["object_motion_area"] > 0.02 for f in kinds[2])


def test_rotated_stream_is_upright_and_its_motion_turns_with_it(synthetic, synthetic_rows):
    plain, rotated = synthetic
    by_video = {u: [r for r in ok(synthetic_rows) if r[VIDEO_URI] == u] for u in (plain.path, rotated.path)}
    rot = by_video[rotated.path][0]
    assert (rot[WIDTH], rot[HEIGHT]) == (192, 320)
    img = decode_image(rot[IMAGE_A])
    assert img.shape == (320, 192, 3)
    same = next(r for r in by_video[plain.path] if r[FRAME_A] == rot[FRAME_A])
    upright = np.rot90(decode_image(same[IMAGE_A]), 1)  # 90 degrees counter-clockwise, as the display matrix says
    assert np.abs(upright.astype(int) - img.astype(int)).mean() < 4
    assert json.loads(rot[FACTS])["camera_motion"] == "tilt_up"  # a pan right, seen rotated


def test_pair_rows_carry_images_and_facts(synthetic_rows):
    for r in ok(synthetic_rows):
        a, b = decode_image(r[IMAGE_A]), decode_image(r[IMAGE_B])
        assert a.shape == b.shape == (r[HEIGHT], r[WIDTH], 3)
        facts = json.loads(r[FACTS])
        for key in ("gap_s", "flow_median", "camera_motion", "object_motion", "blur_a", "blur_b", "brightness_a",
                    "brightness_b", "shot_start_s", "shot_end_s"):
            assert key in facts
        assert 0.5 - 1e-6 <= facts["gap_s"] <= 4.0 + 1e-6
        assert r["t_b_s"] - r["t_a_s"] == pytest.approx(facts["gap_s"], abs=1e-3)


def test_pairs_are_deterministic(synthetic, synthetic_rows):
    again = run([t.path for t in synthetic])
    key = lambda r: (r[VIDEO_ID], r[SHOT], r[PAIR], r[FRAME_A], r[FRAME_B], r[IMAGE_A], r[IMAGE_B])  # noqa: E731
    assert [key(r) for r in ok(again)] == [key(r) for r in ok(synthetic_rows)]


@pytest.fixture(scope="module")
def real_rows():
    return run(row[VIDEO_URI] for row in source_rows(str(ASSETS)))


def test_real_clips_give_pairs_that_never_span_a_cut(real_rows):
    for name, cuts in REAL_CUTS.items():
        rows = [r for r in real_rows if r[VIDEO_URI].endswith(name)]
        assert rows and all(r[FAILED_STAGE] is None for r in rows), name
        for r in rows:
            assert not any(r[FRAME_A] < c <= r[FRAME_B] for c in cuts), (name, r[FRAME_A], r[FRAME_B])
            assert r[FRAME_A] != 0 or name != "Megamind.avi"  # the opening black frame
        assert len({r[FRAME_A] for r in rows} | {r[FRAME_B] for r in rows}) == 2 * len(rows)  # no frame reused
    megamind = [r for r in real_rows if r[VIDEO_URI].endswith("Megamind.avi")]
    assert {r[SHOT] for r in megamind} == {0, 1, 2, 3}  # a pair from every shot


def test_bad_inputs_fail_with_reasons_and_the_run_goes_on(tmp_path):
    good = write_video(tmp_path / "good.avi", [Segment("object", 48, seed=3)], codec="mpeg4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("not a video\n" * 100)
    whole = write_video(tmp_path / "whole.mp4", [Segment("object", 48, seed=4)])
    data = Path(whole.path).read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    write_video(tmp_path / "whole.mkv", [Segment("object", 72, seed=4)])
    data = (tmp_path / "whole.mkv").read_bytes()
    (tmp_path / "truncated.mkv").write_bytes(data[: len(data) // 2])
    write_video(tmp_path / "absurd.mp4", [Segment("object", 8, seed=5)], width=640, height=32)
    (tmp_path / "unsupported.avi").write_bytes(Path(good.path).read_bytes().replace(b"FMP4", b"QQQQ"))
    corrupt_packets(good.path, tmp_path / "corrupt.avi", first=20)
    write_video(tmp_path / "still.mp4", [Segment("static", 72, seed=6)])
    _audio_only(tmp_path / "audio.m4a")
    expect = {"empty.mp4": "empty_file", "text.mp4": "not_a_video", "truncated.mp4": "truncated",
              "truncated.mkv": "truncated", "absurd.mp4": "absurd_dimensions", "unsupported.avi": "unsupported_codec",
              "corrupt.avi": "decode_error", "audio.m4a": "audio_only", "still.mp4": "no_pairs",
              "missing.mp4": "not_found"}
    rows = run([tmp_path / n for n in expect] + [good.path, ASSETS / "box.mp4"])
    for name, reason in expect.items():
        mine = [r for r in rows if r[VIDEO_URI].endswith("/" + name)]
        assert len(mine) == 1 and mine[0][FAILED_REASON] == reason, (name, [(r[FAILED_REASON], r["failed_detail"]) for r in mine])
    assert "near_duplicate" in next(r for r in rows if r[VIDEO_URI].endswith("still.mp4"))["failed_detail"]
    for name in ("good.avi", "box.mp4"):
        assert ok([r for r in rows if r[VIDEO_URI].endswith(name)]), name


def _audio_only(path):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_stage_configs_load_from_plain_data_and_name_bad_keys():
    from datagen import UserError
    from datagen.config import from_dict
    from stages.shots import ShotsConfig

    cfg = from_dict(PairsStage.Config, {"pairing": {"max_gap_s": 3, "motion": {"ransac_px": 2}}, "image_format": "png"})
    assert cfg.pairing.max_gap_s == 3.0 and cfg.pairing.motion.ransac_px == 2.0 and cfg.image_format == "png"
    shots = from_dict(ShotsConfig, {"scan": {"thumb_size_px": [96, 72], "skip_nonref": False}})
    assert shots.scan.thumb_size_px == (96, 72)
    with pytest.raises(UserError, match="pairing.max_gap"):
        from_dict(PairsStage.Config, {"pairing": {"max_gap": 3}})
    with pytest.raises(UserError, match="image_format"):
        from_dict(PairsStage.Config, {"image_format": "gif"})


def test_image_format_and_quality_are_configurable(synthetic):
    batch = rows_to_batch([{VIDEO_URI: synthetic[0].path}])
    batch = ShotsStage()(IngestStage()(batch))
    rows = {}
    for key, cfg in {"png": PairsStage.Config(image_format="png"), "q95": PairsStage.Config(jpeg_quality=95),
                     "q50": PairsStage.Config(jpeg_quality=50)}.items():
        rows[key] = ok(batch_to_rows(PairsStage(cfg)(dict(batch))))
    assert rows["png"][0][IMAGE_A].startswith(b"\x89PNG") and rows["q95"][0][IMAGE_A].startswith(b"\xff\xd8")
    assert sum(len(r[IMAGE_A]) for r in rows["q50"]) < sum(len(r[IMAGE_A]) for r in rows["q95"])
    png, jpg = decode_image(rows["png"][0][IMAGE_A]), decode_image(rows["q95"][0][IMAGE_A])
    assert png.shape == jpg.shape and np.abs(png.astype(int) - jpg.astype(int)).mean() < 8  # same frame (noise texture: JPEG error ~4)


def test_pairs_use_the_scans_kept_frames_and_a_fresh_decode_gives_the_same_bytes(synthetic, monkeypatch):
    """One decode pass: pairs takes its frames from the scan; frames past the scan's memory
    bound are decoded again, and either way the samples are byte-identical."""
    import stages.pairs as pairs_module
    from stages.shots import ShotsConfig

    path = synthetic[1].path  # the rotated clip: the kept copies turn upright like decoded frames
    videos = IngestStage()(rows_to_batch([{VIDEO_URI: path}]))
    kept_batch = ShotsStage()(videos)
    bare_batch = ShotsStage(ShotsConfig(scan=ScanConfig(keep_frames=False)))(videos)

    def no_decoding(*a, **k):
        raise AssertionError("the pairs stage decoded the video although the scan kept its frames")

    with monkeypatch.context() as m:
        m.setattr(pairs_module, "decode_frames", no_decoding)
        from_scan = ok(batch_to_rows(PairsStage()(kept_batch)))
    decoded = ok(batch_to_rows(PairsStage()(bare_batch)))
    assert from_scan and len(from_scan) == len(decoded)
    for a, b in zip(from_scan, decoded):
        assert (a[FRAME_A], a[FRAME_B]) == (b[FRAME_A], b[FRAME_B])
        assert a[IMAGE_A] == b[IMAGE_A] and a[IMAGE_B] == b[IMAGE_B]


def test_scan_arrays_round_trip():
    from stages.shots import pack_arrays, unpack_arrays

    arrays = {"index": np.arange(5), "frames": np.full((2, 6, 4), 7, np.uint8), "format": np.array("yuv420p"),
              "empty": np.zeros((0, 3)), "strided": np.arange(6.0)[::2]}
    back = unpack_arrays(pack_arrays(arrays))
    assert list(back) == list(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v), k
