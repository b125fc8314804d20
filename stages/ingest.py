"""ingest: video URIs -> video rows with a content id and probe facts; bad files marked failed.

Input rows carry `video_uri` (see `source_dataset`, or `source_rows` for small inputs). Output adds `video_id` (hash of size and
first/last MiB, read through fsspec, so a renamed or re-uploaded file keeps its id),
`probe_json` (codec, size, rotation, fps, vfr, duration, frame count, bit depth) and
`frame_table` (the per-frame timestamps, which is what frame indices mean downstream); a
video longer than 1.5 x `window_s` becomes one row per window (`window_json`, and the
window in its `video_id`: datagen/video/windows.py).
Reasons: empty_file, not_found, not_a_video, audio_only, truncated, unsupported_codec,
absurd_dimensions, decode_error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from datagen.video.probe import ProbeLimits, VideoError, local_path, probe, video_id
from datagen.video.windows import plan_windows, window_id
from datagen.video.sources import SourceListing, expand_sources
from schemas.columns import VIDEO_ID, VIDEO_URI
from stages.base import Resources, Stage, fail, failure_reason

PROBE = "probe_json"  # str: JSON of ProbeInfo.facts()
FRAME_TABLE = "frame_table"  # bytes: npz of frame_pts / keyframe_pts
WINDOW = "window_json"  # str: the part of a long video this row covers (datagen/video/windows.py); None: all of it


@dataclass
class IngestConfig:
    limits: ProbeLimits = field(default_factory=ProbeLimits)
    # Videos over 1.5x this are scanned and paired in windows of about this length, one row each
    # (datagen/video/windows.py): memory follows the window, not the file. A window's grid images
    # and kept copies are what its scan holds (~40 KB per 0.5 s at 128 px), so a window of about a
    # short video's length keeps an hours-long video's peak RSS at a short one's: 3 minutes gives
    # 1.11x a 2-minute video (bench/scale.py), 10 minutes gave 1.81x. A pair never spans windows:
    # at most max_gap_s (4 s) of candidates lost per 3 minutes. 0: never split.
    window_s: float = 180.0
    # The per-video pair cap (the pipeline config copies pairs.pairing.max_pairs_per_video here): a
    # window whose share of it is none is not emitted (datagen/video/windows.py, Window.pair_cap)
    max_pairs_per_video: int = 16
    storage_options: dict[str, Any] = field(default_factory=dict)  # fsspec options for s3:// etc. (endpoint, anon)
    # probing reads headers and demuxes packets without decoding: cheap, so many files per task
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, batch_size=8))


def source_rows(inputs: str | Iterable[str], **storage_options) -> list[dict[str, Any]]:
    """Rows for the ingest stage from small `--input` sources, in memory (tests, benches)."""
    return [{VIDEO_URI: uri} for uri in expand_sources(inputs, **storage_options)]


def source_dataset(inputs: list[str], rows_per_block: int, **storage_options):
    """A Ray Dataset of rows for the ingest stage, in blocks of `rows_per_block`: every source
    (checked with `check_sources` first) listed page by page inside Ray read tasks; the
    driver holds no list."""
    return SourceListing(inputs, storage_options).dataset(rows_per_block)


class IngestStage(Stage):
    name: ClassVar[str] = "ingest"
    Config = IngestConfig

    def __init__(self, config: IngestConfig | None = None):
        self.config = config or IngestConfig()

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for row in rows:
            out.extend(self._one(row))
        return out

    def _one(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """The video's row, or one row per window of a long video (its own id: resume and keys see a
        video each); a failed video's one row."""
        uri = str(row[VIDEO_URI])
        opts = self.config.storage_options
        row.update({VIDEO_ID: None, PROBE: None, FRAME_TABLE: None, WINDOW: None})
        try:
            with local_path(uri, **opts) as path:  # fetched once: the id is hashed from the same copy
                row[VIDEO_ID] = video_id(path)
                info = probe(path, self.config.limits)
        except FileNotFoundError as e:
            return [fail(row, self.name, "not_found", f"{uri}: {e}")]
        except VideoError as e:
            return [fail(row, self.name, e.reason, e.detail)]
        except Exception as e:  # a library error we did not foresee must not end the run
            return [fail(row, self.name, failure_reason(e, "probe_error"), f"{type(e).__name__}: {e}")]
        row[PROBE] = json.dumps(info.facts())
        row[FRAME_TABLE] = info.frame_table()
        windows = plan_windows(info.times_s, self.config.window_s)
        if len(windows) == 1:
            return [row]
        return [dict(row, **{VIDEO_ID: window_id(row[VIDEO_ID], w), WINDOW: w.to_json()}) for w in windows
                if w.pair_cap(self.config.max_pairs_per_video, len(info.times_s)) > 0]
