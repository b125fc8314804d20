"""Peak memory of a run stays flat as the corpus grows (Ray Data streams with backpressure;
nothing accumulates in the driver)."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from datagen.video.synthetic import Segment, write_video

pytestmark = pytest.mark.slow


def peak_tree_rss_bytes(cmd: list[str]) -> tuple[int, int, str]:
    """Run `cmd`; sample the RSS of it and every descendant (the local Ray) until it exits."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root, peak, driver_peak = psutil.Process(proc.pid), 0, 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            total = 0
            for p in tree:
                try:
                    total += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            peak, driver_peak = max(peak, total), max(driver_peak, root.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    out = proc.stdout.read()
    assert proc.returncode == 0, out[-3000:]
    return peak, driver_peak, out


def test_peak_memory_flat_from_2_to_8_videos(tmp_path, write_config):
    cfg = write_config(
        labels=["edges"], write={"min_rows_per_write": 20},
        assemble={"tasks": {"edge_detection": 1.0, "text_to_image": 0.0, "instruction_edit": 0.0,
                            "multi_object_customization": 0.0, "object_insertion": 0.0, "depth_to_image": 0.0,
                            "edge_to_image": 0.0, "depth_estimation": 0.0, "referring_segmentation": 0.0}},
    )
    peaks = {}
    for n in (2, 8):
        src = tmp_path / f"videos{n}"
        src.mkdir()
        for i in range(n):  # distinct content: every clip is a different video
            write_video(src / f"v{i}.mp4", [Segment("pan", 40, speed_px=1.5, seed=100 + i),
                                            Segment("object", 40, speed_px=4.0, seed=200 + i)], width=192, height=112)
        peak, driver, out = peak_tree_rss_bytes([sys.executable, "-m", "datagen", "run", "--config", str(cfg),
                                                 "--input", str(src), "--output", str(tmp_path / f"ds{n}")])
        assert "edge_detection" in out
        peaks[n] = (peak, driver)
    (p2, d2), (p8, d8) = peaks[2], peaks[8]
    print(f"peak tree RSS: 2 videos {p2 / 2**20:.0f} MiB, 8 videos {p8 / 2**20:.0f} MiB; "
          f"driver {d2 / 2**20:.0f} -> {d8 / 2**20:.0f} MiB")
    assert p8 < 1.25 * p2 + 200 * 2**20  # 4x the corpus, not 4x the memory
    assert d8 < 1.25 * d2 + 100 * 2**20
