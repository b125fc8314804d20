"""What a window costs in memory must not grow with the window beyond its own arrays: the shot
detector's working arrays stay bounded, and the pairs stage reads the scan's arrays in place."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from datagen.video.cuts import CutConfig, detect
from stages.shots import pack_arrays, unpack_arrays


def _detect_peak(n: int) -> int:
    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 256, (n, 48, 64), np.uint8)
    times = np.arange(n) / 4.0
    tracemalloc.start()
    detect(np.arange(n), thumbs, times, CutConfig())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_shot_detection_working_memory_does_not_grow_with_the_window():
    # 4,000 thumbnails are 12 MB: at once, their int64 and float32 copies were ~100 MB
    short, long_ = _detect_peak(1000), _detect_peak(4000)
    thumbs_bytes = 4000 * 48 * 64
    assert long_ < 2 * thumbs_bytes, long_ / 2**20  # its outputs (steps, shifts, brightness) and a few blocks
    assert long_ - short < 1.0 * (4000 - 1000) * 48 * 64, (short / 2**20, long_ / 2**20)


@pytest.mark.parametrize("kind", [bytes, bytearray])  # bytes from Arrow; the bytearray itself in a fused task
def test_scan_arrays_are_read_in_place(kind):
    frames = [np.full((72, 128), k, np.uint8) for k in range(200)]
    data = kind(pack_arrays({"grid_index": np.arange(200), "grid_images": frames}))
    assert frames == []  # moved into the buffer, not copied beside it
    tracemalloc.start()
    z = unpack_arrays(data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert z["grid_images"].shape == (200, 72, 128) and z["grid_images"][7].max() == 7
    assert np.shares_memory(np.frombuffer(data, np.uint8), z["grid_images"])
    assert peak < len(data) / 10  # views of the buffer (np.load copied all of it)


def test_kept_frames_become_the_packed_buffer_without_a_copy():
    """The scan writes its kept copies once; packing puts the other arrays after them, in the same buffer."""
    import av

    from datagen.video.decode import KeptFrames

    kept = KeptFrames(limit_bytes=2**30)
    for k in range(40):  # 40 frames of 640x360 4:2:0: 13 MiB
        frame = av.VideoFrame.from_ndarray(np.full((360, 640, 3), k, np.uint8), format="rgb24").reformat(format="yuv420p")
        kept.add(k, frame, (640, 360))
    buffer, nbytes, seventh = kept.buffer, kept.nbytes, kept[7].pixels
    tracemalloc.start()
    data = pack_arrays({"grid_index": np.arange(40), "kept_index": np.array(kept.index)}, kept)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert data is buffer and peak < nbytes / 10  # (a copy would have allocated all of it again)
    z = unpack_arrays(bytes(data))
    assert list(z) == ["kept_pixels", "grid_index", "kept_index"]
    assert z["kept_pixels"].shape == (40, 540, 640) and np.array_equal(z["grid_index"], np.arange(40))
    assert np.array_equal(z["kept_pixels"][7], seventh)
