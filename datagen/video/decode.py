"""Decoding, paid for only where a decision needs it.

- `scan`: one cheap pass for shot and motion decisions. PyAV decodes only reference
  frames (non-reference B-frames are skipped inside the decoder), at reduced resolution
  where the codec can (`lowres`), without the deblocking filter, and keeps the luma
  plane only (no colour conversion). It keeps a tiny thumbnail of every decoded frame
  and a small analysis image of the frames nearest a regular time grid.
- `decode_window`: every frame between two timestamps, to place a cut exactly.
- `decode_frames`: full resolution RGB of the few frames that become samples, one seek
  per group of pictures, skipping non-reference frames like the scan did (the frames it
  chose are reference frames). decord's random access is the alternative (same pixels on
  clean streams; it cannot skip frames and counts frames rather than reading timestamps).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import av
import cv2
import numpy as np

from datagen.video.probe import ProbeInfo, VideoError

# Decoders that implement FFmpeg's `lowres` (decode at 1/2, 1/4, 1/8 size in the DCT domain).
LOWRES_CODECS = {"mpeg1video", "mpeg2video", "mpeg4", "h263", "h263p", "msmpeg4v1", "msmpeg4v2", "msmpeg4v3",
                 "wmv1", "wmv2", "mjpeg", "flv1"}


@dataclass
class ScanConfig:
    thumb_size_px: tuple[int, int] = (64, 48)  # cut/brightness signal: big enough for histograms, tiny to store
    analysis_short_side_px: int = 128  # flow/blur images: DIS flow needs ~100 px to see object motion
    grid_step_s: float = 0.5  # candidate pair frames every 0.5 s: 8 gap choices in 0.5-4 s, small to pass between stages
    max_grid_frames: int = 1200  # long videos get a coarser grid: bounds the analysis images to ~40 MB a video
    skip_nonref: bool = True  # skip non-reference frames in the scan (half the decode work with B-frames)
    lowres: int = 2  # decode at 1/4 size where the codec allows (never below analysis_short_side_px)
    fast_decode: bool = True  # skip the deblocking filter in the scan: its artefacts do not move cuts or flow
    decode_threads: int = 1  # Ray parallelises over videos; threads inside one decoder only add CPU overhead
    max_decode_errors: int = 0  # a broken packet means broken frames around it: reject the video by default


@dataclass
class Scan:
    """What the scan saw: `index[k]` is the frame index of thumbnail `thumbs[k]`."""

    index: np.ndarray  # int64 (n,), sorted
    thumbs: np.ndarray  # uint8 (n, th, tw) luma
    grid_index: np.ndarray  # int64 (m,), frames with an analysis image
    grid_images: list[np.ndarray] = field(default_factory=list)  # uint8 luma, display orientation
    decoded_frames: int = 0


def _luma(frame: av.VideoFrame, bits: int) -> np.ndarray:
    if frame.format.name.startswith(("yuv", "yuvj", "nv12", "nv21", "gray")):
        plane = frame.planes[0]
        if bits > 8:
            y = np.frombuffer(plane, np.uint16).reshape(frame.height, plane.line_size // 2)[:, :frame.width]
            return (y >> (bits - 8)).astype(np.uint8)
        return np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, :frame.width]
    if frame.format.name == "rgb24":  # e.g. cinepak: OpenCV's conversion is ~10x cheaper than swscale's here
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_RGB2GRAY)
    return frame.to_ndarray(format="gray")


def _open(path: str, info: ProbeInfo, cfg: ScanConfig, fast: bool):
    container = av.open(path)
    stream = container.streams.video[0]
    ctx = stream.codec_context
    ctx.thread_count = cfg.decode_threads  # also keeps skip_frame changes per packet in effect (no frame threads)
    options = {}
    if fast and cfg.fast_decode:
        options["skip_loop_filter"] = "all"
    if fast and info.codec in LOWRES_CODECS and cfg.lowres > 0:
        level = cfg.lowres
        while level > 0 and min(info.width, info.height) >> level < cfg.analysis_short_side_px:
            level -= 1
        if level:
            options["lowres"] = str(level)
    ctx.options = options
    return container, stream


def _frame_index(info: ProbeInfo, frame: av.VideoFrame) -> int:
    ts = frame.pts if frame.pts is not None else frame.dts
    if ts is None:
        return -1
    k = int(np.searchsorted(info.frame_pts, ts))
    if k >= len(info.frame_pts) or (k > 0 and ts - info.frame_pts[k - 1] < info.frame_pts[k] - ts):
        k -= 1  # nearest entry: some streams carry slightly different frame and packet timestamps
    return max(k, 0)


def _shrink(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average `y` to `size`; a strided view first keeps the average cheap on big frames (10x here)."""
    step = max(1, min(y.shape[1] // (2 * size[0]), y.shape[0] // (2 * size[1])))
    return cv2.resize(y[::step, ::step], size, interpolation=cv2.INTER_AREA)


def analysis_size(info: ProbeInfo, short_side_px: int) -> tuple[int, int]:
    """(width, height) of analysis images before rotation; fixed per video, whatever size frames decode at."""
    s = short_side_px / min(info.width, info.height)
    return max(1, round(info.width * s)), max(1, round(info.height * s))


def _analysis_image(y: np.ndarray, size: tuple[int, int], rotation_deg: int) -> np.ndarray:
    img = _shrink(y, size)
    return np.ascontiguousarray(np.rot90(img, rotation_deg // 90)) if rotation_deg % 360 else img


def scan(path: str, info: ProbeInfo, cfg: ScanConfig) -> Scan:
    """The cheap pass: thumbnails of decoded frames, analysis images on the time grid."""
    times = info.times_s
    grid_t = np.arange(0.0, times[-1] + 1e-9, max(cfg.grid_step_s, float(times[-1]) / cfg.max_grid_frames))
    # The grid frames are the first frames at or after each grid time; in a scan that skips
    # frames the nearest decoded one stands in (at most a frame or two later).
    pending = np.unique(np.searchsorted(times, grid_t).clip(0, len(times) - 1))
    seen: dict[int, np.ndarray] = {}
    grid: dict[int, np.ndarray] = {}
    next_grid = 0  # position in `pending` of the next grid frame to fill
    errors, decoded = 0, 0
    container, stream = _open(path, info, cfg, fast=True)
    if cfg.skip_nonref:
        stream.codec_context.skip_frame = "NONREF"
    bits = info.bit_depth
    size = analysis_size(info, cfg.analysis_short_side_px)
    with container:
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
                frames = stream.codec_context.decode(packet)
            except StopIteration:
                break
            except av.FFmpegError as e:
                errors += 1
                if errors > cfg.max_decode_errors:
                    raise VideoError("decode_error", f"after {decoded} frames: {e}") from None
                continue
            for frame in frames:
                decoded += 1
                idx = _frame_index(info, frame)
                if idx < 0 or idx in seen:
                    continue
                y = _luma(frame, bits)
                seen[idx] = _shrink(y, cfg.thumb_size_px)
                if next_grid < len(pending) and idx >= pending[next_grid]:
                    grid[idx] = _analysis_image(y, size, info.rotation_deg)
                    next_grid = int(np.searchsorted(pending, idx, side="right"))
    if not seen:
        raise VideoError("decode_error", "no frame decoded")
    index = np.array(sorted(seen), np.int64)
    gidx = np.array(sorted(grid), np.int64)
    return Scan(index=index, thumbs=np.stack([seen[i] for i in index]), grid_index=gidx,
                grid_images=[grid[i] for i in gidx], decoded_frames=decoded)


def _packets_from_key(container, stream, info: ProbeInfo, first: int):
    """Seek to the keyframe at or before frame `first` and demux from there."""
    keys = info.keyframe_pts[info.keyframe_pts <= info.frame_pts[first]]
    container.seek(int(keys[-1]) if len(keys) else int(info.frame_pts[0]), stream=stream, backward=True)
    return container.demux(stream)


def decode_window(path: str, info: ProbeInfo, cfg: ScanConfig, first: int, last: int) -> dict[int, np.ndarray]:
    """Thumbnails of every frame with index in [first, last] (best effort: the scan judged the stream decodable).

    Up to `first` only reference frames are decoded (nothing else is needed to reach it).
    """
    container, stream = _open(path, info, cfg, fast=True)
    ctx = stream.codec_context
    out: dict[int, np.ndarray] = {}
    lo = int(info.frame_pts[first])
    with container:
        try:
            for packet in _packets_from_key(container, stream, info, first):
                ts = packet.pts if packet.pts is not None else packet.dts
                ctx.skip_frame = "NONREF" if ts is not None and ts < lo else "DEFAULT"
                for frame in ctx.decode(packet):
                    idx = _frame_index(info, frame)
                    if first <= idx <= last:
                        out[idx] = _shrink(_luma(frame, info.bit_depth), cfg.thumb_size_px)
                if len(out) > last - first or (ts is not None and ts > info.frame_pts[min(last + 16, len(info.frame_pts) - 1)]):
                    break
        except av.FFmpegError:
            pass
    return out


def fit_size(width: int, height: int, short_side_px: int, max_long_side_px: int) -> tuple[int, int]:
    """Output size: short side to `short_side_px`, long side at most `max_long_side_px`, never upscaled."""
    short, long_ = min(width, height), max(width, height)
    s = min(1.0, short_side_px / short, max_long_side_px / long_)
    w, h = max(2, round(width * s)), max(2, round(height * s))
    return w - w % 2, h - h % 2


def _resize(rgb: np.ndarray, short_side_px: int, max_long_side_px: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    ow, oh = fit_size(w, h, short_side_px, max_long_side_px)
    if (ow, oh) != (w, h):
        rgb = cv2.resize(rgb, (ow, oh), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def decode_frames(path: str, info: ProbeInfo, indices: list[int], short_side_px: int, max_long_side_px: int,
                  decoder: str = "pyav", skip_nonref: bool = True) -> dict[int, np.ndarray]:
    """Full-quality RGB frames (display orientation, resized) for `indices`.

    `skip_nonref` must match the scan: the frames it chose are reference frames, and the
    same decode mode names them by the same timestamps.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return {}
    frames = _decord_frames(path, info, wanted) if decoder == "decord" else None
    if frames is None:
        frames = _pyav_frames(path, info, wanted, skip_nonref)
        if skip_nonref and len(frames) < len(wanted):
            frames.update(_pyav_frames(path, info, [i for i in wanted if i not in frames], False))
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoError("decode_error", f"frames {missing[:5]} do not decode")
    return {i: _resize(f, short_side_px, max_long_side_px) for i, f in frames.items()}


def _decord_frames(path: str, info: ProbeInfo, wanted: list[int]) -> dict[int, np.ndarray] | None:
    """decord by index (it applies the display rotation itself), only when its frame table is ours."""
    try:
        import decord

        vr = decord.VideoReader(path, num_threads=1)
        if len(vr) != info.num_frames:
            return None
        ts = vr.get_frame_timestamp(wanted)[:, 0]
        ours = info.times_s[wanted]
        if not np.allclose(ts - ts[0], ours - ours[0], atol=0.5 / max(info.fps, 1.0)):
            return None
        batch = vr.get_batch(wanted).asnumpy()
    except Exception:  # decord raises its own error types (DECORDError, RuntimeError): PyAV takes over
        return None
    return {i: batch[k] for k, i in enumerate(wanted)}


def _pyav_frames(path: str, info: ProbeInfo, wanted: list[int], skip_nonref: bool) -> dict[int, np.ndarray]:
    """One seek per group of pictures that holds wanted frames, then decode forward to the last of them."""
    key_of = np.searchsorted(info.keyframe_pts, info.frame_pts[wanted], side="right")
    out: dict[int, np.ndarray] = {}
    k = (info.rotation_deg % 360) // 90
    with av.open(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = 1
        if skip_nonref:
            ctx.skip_frame = "NONREF"
        for group in dict.fromkeys(key_of.tolist()):
            todo = {i for i, g in zip(wanted, key_of) if g == group}
            # decoders hold a few frames back: read a little past the last wanted one before giving up
            limit = info.frame_pts[min(max(todo) + 16, len(info.frame_pts) - 1)]
            try:
                for packet in _packets_from_key(container, stream, info, min(todo)):
                    for frame in ctx.decode(packet):
                        idx = _frame_index(info, frame)
                        if idx in todo:
                            rgb = frame.to_ndarray(format="rgb24")
                            out[idx] = np.rot90(rgb, k) if k else rgb
                            todo.discard(idx)
                    ts = packet.pts if packet.pts is not None else packet.dts
                    if not todo or (ts is not None and ts > limit):
                        break
            except av.FFmpegError:
                pass  # what did not come out is reported missing by the caller
            ctx.flush_buffers()
    return out
