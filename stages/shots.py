"""shots: video rows -> the same rows with shot boundaries and the scan's analysis images.

One decode pass (reference frames only; see datagen/video/decode.py) feeds everything the
first half needs: shot boundaries here; the motion measurements of the pairs stage, which
receives the small analysis images of the time grid in `scan_arrays`; and the sample-quality
copies of those grid frames, so the pairs stage does not decode the video again. With
equal resources Ray Data fuses ingest, shots and pairs into one task, so those copies
(bounded by `scan.keep_frames_mb`) pass in memory and never cross the object store.
Output columns: `shots_json` = {"cuts": [frame...], "shots": [{shot, start_frame,
end_frame, start_s, end_s, fade_in, fade_out}], "transitions": [[first, last]...],
"unusable": {frame: black|blown|transient|fade|transition}, "brightness": {frame: 0-1},
"decoded_frames": n, "detector": {model, ...provenance}}; `scan_arrays` (bytes, see pack_arrays:
grid_index, grid_images, step_index, step_change, step_back, step_shift (the cut signal and content shift of every
decoded frame, for the pairs' continuity and camera-path checks), and kept_index, kept_pixels, kept_format, kept_size, kept_colorspace,
kept_color_range for the kept copies).
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

import cv2
import numpy as np

from datagen.video.cuts import CutConfig, FrameSteps, Shot, Shots, detect
from datagen.video.decode import KeptFrame, KeptFrames, Scan, ScanConfig, decode_window, scan
from datagen.video.probe import ProbeInfo, VideoError, local_path
from datagen.video.transnet import TransNetConfig
from datagen.video.windows import Window
from schemas.columns import VIDEO_URI
from stages.base import Resources, Stage, fail, failure_reason
from stages.ingest import FRAME_TABLE, PROBE, WINDOW

SHOTS = "shots_json"
SCAN = "scan_arrays"


@dataclass
class ShotsConfig:
    # builtin: the thumbnail detector (CPU, ~100x cheaper); transnetv2: the TransNetV2 network in
    # its own model stage after this one (stages/transnet.py), fed from this stage's one decode pass
    detector: Literal["builtin", "transnetv2"] = "builtin"
    scan: ScanConfig = field(default_factory=ScanConfig)
    cuts: CutConfig = field(default_factory=CutConfig)
    transnet: TransNetConfig = field(default_factory=TransNetConfig)
    storage_options: dict[str, Any] = field(default_factory=dict)
    opencv_threads: int = 1  # Ray runs a worker per CPU; OpenCV's own thread pool would only add contention
    # one video per batch: a scan takes ~0.1-1 s per minute of video and its rows are large
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, batch_size=1))
    # the TransNetV2 actors: a few videos per batch (their windows share forward passes); the gpu
    # profile gives each a fraction of a GPU (the network is small: ~30 MB of weights). One
    # batch per task: a row carries its video's whole scan (tens of MB), not a pair's frames.
    transnet_resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, batch_size=4, concurrency=1,
                                                                            batches_per_task=1))


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
        scan_cfg = dataclasses.replace(cfg.scan, net_frames=cfg.detector == "transnetv2")
        try:
            info = ProbeInfo.from_columns(row[PROBE], row[FRAME_TABLE])
            window = Window.from_row(row.get(WINDOW))  # a long video's part: only its frames are scanned
            span = (window.first_frame, window.last_frame) if window else (0, None)
            with local_path(str(row[VIDEO_URI]), **cfg.storage_options) as path:
                seen = scan(path, info, scan_cfg, *span)
                shots = detect(seen.index, seen.thumbs, info.times_s, cfg.cuts,
                               refine=lambda a, b: decode_window(path, info, cfg.scan, a, b))
        except VideoError as e:
            return fail(row, self.name, e.reason, e.detail)
        except Exception as e:  # never end the run on one video
            return fail(row, self.name, failure_reason(e, "shots_error"), f"{type(e).__name__}: {e}")
        row[SHOTS] = shots_json(shots, seen.grid_index, seen.decoded_frames,
                                skip_nonref=scan_cfg.skip_nonref and not scan_cfg.net_frames)
        row[SCAN] = _scan_bytes(seen, shots.steps)
        return row


def shots_json(shots: Shots, grid_index: np.ndarray, decoded_frames: int, skip_nonref: bool,
               detector: dict | None = None) -> str:
    grid = set(grid_index.tolist())
    return json.dumps({
        "cuts": shots.cuts,
        "shots": [asdict(s) for s in shots.shots],
        "transitions": shots.transitions,
        "unusable": {str(k): v for k, v in shots.unusable.items() if k in grid},
        "brightness": {str(k): round(v, 4) for k, v in shots.brightness.items() if k in grid},
        "decoded_frames": decoded_frames,
        "skip_nonref": skip_nonref,  # the pairs stage decodes its frames the same way
        "detector": detector or {"model": "builtin"},  # provenance of the boundaries (model, weights, threshold)
    })


def _scan_bytes(seen: Scan, steps: FrameSteps | None) -> bytearray:
    """What the pairs stage reads of the scan, packed. Consumes `seen`: the kept copies' buffer
    becomes the packed one, and its grid images move into it one by one (pack_arrays empties the
    list), so a window's frames are held once while packing, not three times (the frames, their
    np.stack, the joined bytes: ~150 MiB of a 10-minute window's 50 MiB, by tracemalloc)."""
    kept = seen.kept
    arrays: dict[str, Any] = dict(grid_index=seen.grid_index, grid_images=seen.grid_images)
    if steps is not None:  # the cut signal of every decoded frame: the pairs' continuity check reads it
        arrays.update(step_index=steps.index, step_change=steps.change, step_back=steps.back)
        if steps.shift is not None:
            arrays.update(step_shift=steps.shift)
    if seen.net_frames is not None:  # for the TransNetV2 stage, which drops them (and the thumbnails) again
        arrays.update(net_frames=seen.net_frames, thumbs=seen.thumbs)
    if len(kept):  # (a stream whose frames change format midway keeps none: pairs decodes them)
        arrays.update(kept_index=np.array(kept.index, np.int64), kept_format=np.array(kept.format),
                      kept_size=np.array(kept.size, np.int64), kept_colorspace=np.array(kept.colorspace, np.int64),
                      kept_color_range=np.array(kept.color_range, np.int64))
    seen.grid_images, seen.kept, seen.thumbs = [], KeptFrames(), None
    return pack_arrays(arrays, kept if len(kept) else None)


def pack_arrays(arrays: dict[str, np.ndarray | list[np.ndarray]], kept: KeptFrames | None = None) -> bytearray:
    """Named arrays as consecutive .npy records, then the record of their names, then (the last
    8 bytes) where that record starts. With `kept`, the scan's kept copies: their buffer already
    holds the pixels after room for one header, and becomes the packed buffer as `kept_pixels`,
    its first record (the pixels are not copied again). A list of equal-shaped arrays is stored
    stacked, and emptied as it is written: an array it held alone is freed as soon as it is copied.
    (np.savez's zip checksums and a growing BytesIO each cost more than the copy.)"""
    names: list[str] = []
    if kept is not None:
        out = kept.buffer
        kept.buffer = bytearray()
        out[:KeptFrames.HEAD] = _npy_header(dict(descr="|u1", fortran_order=False,
                                                 shape=(len(kept.index), *kept.shape)), KeptFrames.HEAD)
        names.append("kept_pixels")
    else:
        out = bytearray()
    for name, v in arrays.items():
        _append_record(out, v)
        names.append(name)
    names_at = len(out)
    _append_record(out, np.array(names))
    out += names_at.to_bytes(8, "little")
    return out


def _npy_header(meta: dict, size: int | None = None) -> bytes:
    """A .npy 1.0 header; with `size`, padded with spaces to exactly that many bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, meta)
    head = header.getvalue()
    if size is None:
        return head
    if len(head) > size:
        raise ValueError(f"a {len(head)}-byte array header does not fit the {size} bytes left for it")
    body = head[10:-1] + b" " * (size - len(head)) + b"\n"
    return head[:8] + len(body).to_bytes(2, "little") + body


def _append_record(out: bytearray, v: np.ndarray | list[np.ndarray]) -> None:
    if isinstance(v, list):
        like = v[0] if v else np.empty(0, np.uint8)
        out += _npy_header(dict(np.lib.format.header_data_from_array_1_0(like), shape=(len(v), *like.shape)))
        v.reverse()  # (a list is popped from its end: each frame is released once copied)
        while v:
            out += memoryview(np.ascontiguousarray(v.pop()).reshape(-1).view(np.uint8))  # (not ndarray: NumPy's add)
        return
    v = np.asarray(v)
    v = v if v.flags.c_contiguous else v.copy()  # (not ascontiguousarray: it turns 0-d arrays into 1-d)
    out += _npy_header(np.lib.format.header_data_from_array_1_0(v))
    out += memoryview(v.reshape(-1).view(np.uint8))


def unpack_arrays(data: bytes | bytearray) -> dict[str, np.ndarray]:
    """Inverse of pack_arrays, without copying: the arrays are views of `data` (read-only for bytes).
    Only each record's header is copied out to be parsed (io.BytesIO over a bytearray copies all of
    it: ~12 ms for a 2-minute clip's scan)."""
    pos = int.from_bytes(data[len(data) - 8:], "little")

    def record() -> np.ndarray:
        nonlocal pos
        # .npy 1.0: 6 magic bytes, 2 version bytes, a little-endian uint16 header length, the header
        head_len = 10 + int.from_bytes(data[pos + 8:pos + 10], "little")
        head = io.BytesIO(bytes(data[pos:pos + head_len]))
        np.lib.format.read_magic(head)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        count = math.prod(shape)
        a = np.frombuffer(data, dtype, count, pos + head_len).reshape(shape, order="F" if fortran else "C")
        pos += head_len + count * dtype.itemsize
        return a

    names = record()
    pos = 0
    return {str(n): record() for n in names}


def load_shots(row: dict[str, Any]) -> tuple[Shots, np.ndarray, list[np.ndarray], dict[int, KeptFrame]]:
    """Inverse of what ShotsStage writes: (shots, grid frame indices, grid analysis images, kept copies)."""
    data = json.loads(row[SHOTS])
    shots = Shots(shots=[Shot(**s) for s in data["shots"]], cuts=list(data["cuts"]),
                  unusable={int(k): v for k, v in data["unusable"].items()},
                  brightness={int(k): v for k, v in data["brightness"].items()},
                  transitions=[tuple(t) for t in data.get("transitions", [])])
    z = unpack_arrays(row[SCAN])
    if "step_index" in z:
        shots.steps = FrameSteps(z["step_index"], z["step_change"], z["step_back"], z.get("step_shift"))
    kept = {}
    if "kept_index" in z:
        fmt, size = str(z["kept_format"]), tuple(int(v) for v in z["kept_size"])
        kept = {int(i): KeptFrame(px, fmt, size, int(cs), int(cr)) for i, px, cs, cr in
                zip(z["kept_index"], z["kept_pixels"], z["kept_colorspace"], z["kept_color_range"])}
    return shots, z["grid_index"], list(z["grid_images"]), kept
