"""Identify and probe one video: content id, stream facts, and the frame table.

`probe` demuxes every packet (no decoding: cheap) to build the frame table (one
presentation timestamp per frame, which is what frame indices mean everywhere in the
pipeline) and to catch truncated files; it decodes one frame to prove the codec works.
A bad input raises `VideoError(reason, detail)`; the stage turns it into a failure row.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import av
import numpy as np
from fsspec.core import url_to_fs

from datagen.io.storage import fetched

MIB = 1 << 20
# Leading bytes of containers we recognise: a file that starts like a video but cannot be
# opened was cut short (e.g. an MP4 whose index at the end is missing), not "not a video".
VIDEO_MAGIC = (b"RIFF", b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"FLV", b"\x30\x26\xb2\x75", b"G")
IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif", "tiff_pipe")


class VideoError(Exception):
    """A bad input: `reason` is a short groupable code, `detail` says what was seen."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class ProbeLimits:
    min_side_px: int = 32  # smaller than a thumbnail: nothing to learn from
    max_side_px: int = 8192  # 8K; larger is a broken header or a panorama we cannot decode cheaply
    max_aspect: float = 5.0  # wider than 5:1 is a banner or a corrupt header, not footage
    min_frames: int = 2  # a pair needs two distinct frames
    truncation_tolerance_s: float = 1.0  # containers round durations; a bigger shortfall is a cut-off file


@dataclass
class ProbeInfo:
    codec: str
    width: int  # coded size, before rotation
    height: int
    rotation_deg: int  # counter-clockwise display rotation (PyAV's VideoFrame.rotation)
    fps: float  # average over the frame table
    vfr: bool
    duration_s: float
    num_frames: int
    bit_depth: int
    pix_fmt: str
    size_bytes: int
    time_base: float
    frame_pts: np.ndarray = field(repr=False)  # int64, sorted, one per frame
    keyframe_pts: np.ndarray = field(repr=False)

    def facts(self) -> dict:
        """The JSON-able facts (everything but the frame table)."""
        return {k: getattr(self, k) for k in ("codec", "width", "height", "rotation_deg", "fps", "vfr", "duration_s",
                                              "num_frames", "bit_depth", "pix_fmt", "size_bytes", "time_base")}

    def frame_table(self) -> bytes:
        """The timestamps as compact bytes for a batch column (a long video has tens of thousands)."""
        buf = io.BytesIO()
        np.savez(buf, frame_pts=self.frame_pts, keyframe_pts=self.keyframe_pts)
        return buf.getvalue()

    @classmethod
    def from_columns(cls, facts_json: str, frame_table: bytes) -> "ProbeInfo":
        with np.load(io.BytesIO(frame_table)) as z:
            return cls(**json.loads(facts_json), frame_pts=z["frame_pts"], keyframe_pts=z["keyframe_pts"])

    @property
    def times_s(self) -> np.ndarray:
        return (self.frame_pts - self.frame_pts[0]) * self.time_base


def video_id(uri: str, **storage_options) -> str:
    """Content id: hash of the size and the first and last MiB, so a renamed or moved file keeps its id."""
    fs, path = url_to_fs(uri, **storage_options)
    size = int(fs.size(path))
    h = hashlib.sha256(str(size).encode())
    with fs.open(path, "rb") as f:
        h.update(f.read(MIB))
        if size > MIB:
            f.seek(max(MIB, size - MIB))
            h.update(f.read(MIB))
    return h.hexdigest()[:24]


@contextmanager
def local_path(uri: str, **storage_options) -> Iterator[str]:
    """A local path for `uri`: object-storage files come from the node's fetch cache
    (datagen.io.storage.fetched), downloaded once however many stages open them."""
    with fetched(uri, **storage_options) as path:
        yield path


def probe(path: str, limits: ProbeLimits = ProbeLimits()) -> ProbeInfo:
    size = os.path.getsize(path)
    if size == 0:
        raise VideoError("empty_file", "0 bytes")
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise _unopenable(path, size, e) from None
    except UnicodeDecodeError as e:  # PyAV decodes the header's metadata as UTF-8: damaged bytes there
        raise VideoError("corrupt", f"container metadata is not valid text (damaged header): {e}") from None
    with container:
        if not container.streams.video:
            if container.streams.audio:
                raise VideoError("audio_only", f"{len(container.streams.audio)} audio stream(s), no video stream")
            if not container.streams:  # a container that lists no stream at all: its index is damaged
                raise VideoError("corrupt", f"format {container.format.name} opened but lists no stream "
                                            "(damaged index)")
            raise VideoError("not_a_video", f"format {container.format.name} has no video stream")
        if container.format.name in IMAGE_FORMATS:
            raise VideoError("not_a_video", f"a still image ({container.format.name})")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None or ctx.codec is None or ctx.name in (None, "none"):
            raise VideoError("unsupported_codec", f"no decoder for the video stream (codec tag {getattr(ctx, 'codec_tag', '?')!r})")
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        lo, hi = min(width, height), max(width, height)
        if lo < limits.min_side_px:
            raise VideoError("too_small", f"{width}x{height}: a side under {limits.min_side_px} px")
        if hi > limits.max_side_px or hi > limits.max_aspect * max(lo, 1):
            raise VideoError("absurd_dimensions", f"{width}x{height} (limits: sides up to "
                             f"{limits.max_side_px} px, aspect <= {limits.max_aspect})")
        pts, keys, first = _frame_table(container, stream)
        if not len(pts):  # a video stream with a decoder but no packet to read: its index is damaged
            raise VideoError("corrupt", f"the {width}x{height} video stream lists no readable frame (damaged index)")
        if len(pts) < limits.min_frames:
            raise VideoError("too_short", f"{len(pts)} frame(s); a pair needs at least {limits.min_frames}")
        tb = float(stream.time_base)
        last_s = float(pts[-1] - pts[0]) * tb
        declared_s = _declared_duration_s(container, stream)
        if declared_s and declared_s - last_s > max(limits.truncation_tolerance_s, 0.1 * declared_s):
            raise VideoError("truncated", f"frames end at {last_s:.2f} s of a declared {declared_s:.2f} s")
        if isinstance(first, VideoError):
            raise first
        rotation = int(round(first.rotation or 0)) % 360
        fmt = ctx.format
        bit_depth = int(fmt.components[0].bits) if fmt is not None and fmt.components else 8
        steps = np.diff(pts).astype(np.float64) * tb
        span_s = float(steps.sum())
        fps = (len(pts) - 1) / span_s if span_s > 0 else float(stream.average_rate or 0)
        vfr = bool(len(steps) > 1 and steps.mean() > 0 and steps.std() / steps.mean() > 0.05)
        return ProbeInfo(codec=ctx.name, width=width, height=height, rotation_deg=rotation, fps=round(fps, 4),
                         vfr=vfr, duration_s=round(span_s + (1.0 / fps if fps else 0.0), 4), num_frames=len(pts),
                         bit_depth=bit_depth, pix_fmt=fmt.name if fmt is not None else "", size_bytes=size,
                         time_base=tb, frame_pts=pts, keyframe_pts=keys)


def _unopenable(path: str, size: int, err: Exception) -> VideoError:
    """Why FFmpeg cannot open a file: cut short, damaged, or not a video container at all."""
    with open(path, "rb") as f:
        head = f.read(12)
    if head[4:8] == b"ftyp":  # MP4/MOV: its top-level boxes say whether the file ends too early
        cut = _mp4_boxes_run_past_end(path, size)
        reason = "truncated" if cut else "corrupt"
        return VideoError(reason, f"MP4 {'cut short: a box runs past the end' if cut else 'damaged'}: {err}")
    if head.startswith(b"RIFF"):  # AVI: the RIFF header declares the file's size
        cut = int.from_bytes(head[4:8], "little") + 8 > size
        return VideoError("truncated" if cut else "corrupt", f"AVI {'cut short' if cut else 'damaged'}: {err}")
    if head.startswith(VIDEO_MAGIC[:-1]):
        return VideoError("corrupt", f"container header present but unreadable (damaged or cut short): {err}")
    return VideoError("not_a_video", f"no readable container: {err}")


def _mp4_boxes_run_past_end(path: str, size: int) -> bool:
    """Walk the top-level boxes: True when one declares more bytes than the file has left."""
    pos = 0
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            box_bytes, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if box_bytes == 1 and len(head) == 16:
                box_bytes = int.from_bytes(head[8:16], "big")
            if box_bytes == 0:  # "to the end of the file"
                return False
            if box_bytes < 8 or not kind.isascii() or not kind.decode("ascii").isprintable():
                return False  # garbage where a box should start: damaged, not cut
            if pos + box_bytes > size:
                return True
            pos += box_bytes
    return False


def _frame_table(container, stream) -> tuple[np.ndarray, np.ndarray, av.VideoFrame | VideoError]:
    """Sorted unique timestamps of the non-empty video packets (empty packets are dropped frames),
    those of the keyframes, and the first decoded frame (its rotation; whether the stream decodes
    at all), or the VideoError that says why none decodes. The first frame is decoded from the
    packets as they are demuxed (a second open of the file for it: box.mp4's probe 19.7 -> 13.3 ms)."""
    pts, keys = [], []
    ctx = stream.codec_context
    ctx.thread_count = 1  # threads cost start-up CPU for one frame
    first: av.VideoFrame | VideoError | None = None
    try:
        for packet in container.demux(stream):
            if first is None:
                first = _first_frame(ctx, packet)
            ts = packet.pts if packet.pts is not None else packet.dts
            if packet.size == 0 or ts is None:
                continue
            pts.append(ts)
            if packet.is_keyframe:
                keys.append(ts)
    except av.FFmpegError as e:
        raise VideoError("truncated", f"demuxing stopped after {len(pts)} packets: {e}") from None
    if first is None:  # the decoder held its frames back to the end: drain it
        first = _first_frame(ctx, None) or VideoError("decode_error", "no frame decodes")
    return np.unique(np.asarray(pts, np.int64)), np.unique(np.asarray(keys, np.int64)), first


def _first_frame(ctx, packet) -> av.VideoFrame | VideoError | None:
    """The frame `packet` (None: the end of the stream) decodes to, if any. The decoder is drained
    after it: a stream with B-frames holds its first frame back until a few more packets are
    decoded in full, which the probe has no use for (Megamind.avi's probe 5.6 -> 2.9 ms)."""
    try:
        frames = ctx.decode(packet) or (ctx.decode(None) if packet is not None else [])
    except av.FFmpegError as e:
        return VideoError("decode_error", f"first frame does not decode: {e}")
    if not frames and packet is not None:
        ctx.flush_buffers()  # (drained: reopen it for the next packet)
    return frames[0] if frames else None


def _declared_duration_s(container, stream) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    return float(container.duration) / 1e6 if container.duration else 0.0
