"""Every held-out kind of input file, generated with PyAV, gets the reason (or the facts) that is true of it."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from datagen.video.probe import ProbeInfo, VideoError, probe
from datagen.video.synthetic import Segment, write_video
from schemas.reasons import REASONS

W, H = 64, 48


def clip(path: Path, frames: int = 24, **kw) -> Path:
    write_video(path, [Segment("object", frames, seed=1)], width=W, height=H, **kw)
    return path


def tiny(path: Path) -> Path:
    """A 2x2 H.264 clip: a real video, too small to learn from."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 2, 2, "yuv420p"
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(np.full((2, 2, 3), i * 10, np.uint8), format="rgb24")
            out.mux(s.encode(frame))
        out.mux(s.encode())
    return path


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            c.mux(s.encode(frame))
        c.mux(s.encode())
    return path


def flipped(path: Path, start_fraction: float, n: int, seed: int = 0) -> Path:
    data = bytearray(clip(path.with_suffix(".src.mp4")).read_bytes())
    # A flipped size field of a top-level box reads exactly like a file cut short (the box
    # runs past the end), so the flips spare those 8-byte headers: this pins damage elsewhere.
    headers, pos = set(), 0
    while pos + 8 <= len(data) and (box := int.from_bytes(data[pos:pos + 4], "big")) >= 8:
        headers.update(range(pos, pos + 8))
        pos += box
    rng = np.random.default_rng(seed)
    for i in rng.integers(int(len(data) * start_fraction), len(data), n):
        if int(i) not in headers:
            data[i] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))
    return path


def truncated(path: Path) -> Path:
    data = clip(path.with_suffix(".src.mp4")).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def garbled_frames(path: Path) -> Path:
    """A sound MP4 index over frames of random bytes: it opens and demuxes, and nothing decodes."""
    data = bytearray(clip(path.with_suffix(".src.mp4")).read_bytes())
    at = data.index(b"mdat")
    size = int.from_bytes(data[at - 4:at], "big")
    data[at + 4:at - 4 + size] = np.random.default_rng(0).integers(0, 256, size - 8, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


BAD = {
    "zero_bytes": (lambda p: (p.write_bytes(b""), p)[1], "empty_file"),
    "text": (lambda p: (p.write_text("not a video\n" * 50), p)[1], "not_a_video"),
    "truncated": (truncated, "truncated"),
    "bit_flipped_index": (lambda p: flipped(p, 0.25, 64), "corrupt"),  # x264 MP4: the index sits at the end
    "bit_flipped_header": (lambda p: flipped(p, 0.0, 400, seed=1), "corrupt"),
    "audio_only": (audio_only, "audio_only"),
    "2x2": (tiny, "too_small"),
    "one_frame": (lambda p: clip(p, frames=1), "too_short"),
    "garbled_frames": (garbled_frames, "decode_error"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_file_gets_its_true_reason(tmp_path, kind):
    make, reason = BAD[kind]
    path = make(tmp_path / f"{kind}.mp4")
    with pytest.raises(VideoError) as info:
        probe(str(path))
    assert info.value.reason == reason, (kind, info.value.detail)
    assert reason in REASONS and info.value.detail


GOOD = {
    "vfr": (lambda p: clip(p, vfr_jitter=0.4), {"vfr": True}),
    "rotated": (lambda p: clip(p, rotation_deg=90), {"rotation_deg": 90, "width": W, "height": H}),
    "10_bit": (lambda p: clip(p, pix_fmt="yuv420p10le"), {"bit_depth": 10}),
    "av1": (lambda p: clip(p, codec="libsvtav1"), {"codec": "libdav1d", "num_frames": 24}),
}


@pytest.mark.parametrize("kind", list(GOOD))
def test_unusual_but_valid_file_probes_with_its_facts(tmp_path, kind):
    make, facts = GOOD[kind]
    info: ProbeInfo = probe(str(make(tmp_path / f"{kind}.mp4")))
    assert {k: info.facts()[k] for k in facts} == facts
    assert info.num_frames == 24 and len(info.frame_pts) == 24
