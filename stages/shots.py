"""shots: video rows -> the same rows with shot boundaries and the scan's analysis images.

One cheap decode pass (reference frames only, reduced resolution, luma only; see
datagen/video/decode.py) feeds both decisions: shot boundaries here, and the motion
measurements of the pairs stage, which receives the small analysis images of the time
grid in `scan_npz` instead of decoding the video again.
Output columns: `shots_json` = {"cuts": [frame...], "shots": [{shot, start_frame,
end_frame, start_s, end_s, fade_in, fade_out}], "unusable": {frame: black|blown|
transient|fade}, "brightness": {frame: 0-1}, "decoded_frames": n}; `scan_npz` (bytes).
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import cv2
import numpy as np

from datagen.video.cuts import CutConfig, Shot, Shots, detect
from datagen.video.decode import ScanConfig, decode_window, scan
from datagen.video.probe import ProbeInfo, VideoError, local_path
from schemas.columns import VIDEO_URI
from stages.base import Resources, Stage, fail
from stages.ingest import FRAME_TABLE, PROBE

SHOTS = "shots_json"
SCAN = "scan_npz"


@dataclass
class ShotsConfig:
    scan: ScanConfig = field(default_factory=ScanConfig)
    cuts: CutConfig = field(default_factory=CutConfig)
    storage_options: dict[str, Any] = field(default_factory=dict)
    opencv_threads: int = 1  # Ray runs a worker per CPU; OpenCV's own thread pool would only add contention
    # one video per batch: a scan takes ~0.1-1 s per minute of video and its rows are large
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, batch_size=1, concurrency=2))


class ShotsStage(Stage):
    name: ClassVar[str] = "shots"
    Config = ShotsConfig

    def __init__(self, config: ShotsConfig | None = None):
        self.config = config or ShotsConfig()
        cv2.setNumThreads(self.config.opencv_threads)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [self._one(row) for row in rows]

    def _one(self, row: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        row.update({SHOTS: None, SCAN: None})
        try:
            info = ProbeInfo.from_columns(row[PROBE], row[FRAME_TABLE])
            with local_path(str(row[VIDEO_URI]), **cfg.storage_options) as path:
                seen = scan(path, info, cfg.scan)
                shots = detect(seen.index, seen.thumbs, info.times_s, cfg.cuts,
                               refine=lambda a, b: decode_window(path, info, cfg.scan, a, b))
        except VideoError as e:
            return fail(row, self.name, e.reason, e.detail)
        except Exception as e:  # never end the run on one video
            return fail(row, self.name, "shots_error", f"{type(e).__name__}: {e}")
        grid = set(seen.grid_index.tolist())
        row[SHOTS] = json.dumps({
            "cuts": shots.cuts,
            "shots": [asdict(s) for s in shots.shots],
            "unusable": {str(k): v for k, v in shots.unusable.items() if k in grid},
            "brightness": {str(k): round(v, 4) for k, v in shots.brightness.items() if k in grid},
            "decoded_frames": seen.decoded_frames,
            "skip_nonref": cfg.scan.skip_nonref,  # the pairs stage decodes its frames the same way
        })
        buf = io.BytesIO()
        np.savez(buf, grid_index=seen.grid_index, grid_images=np.stack(seen.grid_images))
        row[SCAN] = buf.getvalue()
        return row


def load_shots(row: dict[str, Any]) -> tuple[Shots, np.ndarray, list[np.ndarray]]:
    """Inverse of what ShotsStage writes: (shots, grid frame indices, grid analysis images)."""
    data = json.loads(row[SHOTS])
    shots = Shots(shots=[Shot(**s) for s in data["shots"]], cuts=list(data["cuts"]),
                  unusable={int(k): v for k, v in data["unusable"].items()},
                  brightness={int(k): v for k, v in data["brightness"].items()})
    with np.load(io.BytesIO(row[SCAN])) as z:
        return shots, z["grid_index"], list(z["grid_images"])
