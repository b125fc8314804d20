"""Decoding, paid for once: one pass decides and keeps what the samples need.

- `scan`: the one pass over a video. PyAV decodes only reference frames (non-reference
  B-frames are skipped inside the decoder, except just before keyframes) and reads the luma plane of each for a tiny
  thumbnail (shot decisions) and, on a regular time grid, a small analysis image (motion
  decisions). Grid frames are the only frames a pair can use, so the scan also keeps a
  sample-quality copy of each, already scaled to the sample size in its own pixel format:
  the pairs stage converts the few it chooses to RGB instead of decoding the video again.
  Decoding at full quality (no `lowres`, deblocking on) is what makes those copies usable;
  for H.264 the second pass it saves cost as much as the whole scan.
- `decode_window`: every frame between two timestamps, to place a cut exactly.
- `decode_frames`: the fallback for frames the scan did not keep (over the memory bound),
  one seek per group of pictures, producing exactly the pixels a kept copy gives. decord's
  random access is the alternative (same pixels on clean streams when no resize is needed;
  it cannot skip frames and counts frames rather than reading timestamps).
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from datagen.video.probe import ProbeInfo, VideoError

# Pixel formats a kept frame stays in (PyAV copies them to and from arrays exactly); any
# other format is converted to RGB when kept, which loses nothing a sample needs.
# (Each one's frame as PyAV's arrays hold it: its planes' rows end to end, with the bytes per
# pixel of each plane and the shape of the whole, for width w and height h.)
_KEEP_LAYOUT = {
    "yuv420p": ((1, 1, 1), lambda w, h: (h * 3 // 2, w)),
    "yuvj420p": ((1, 1, 1), lambda w, h: (h * 3 // 2, w)),
    "yuv444p": ((1, 1, 1), lambda w, h: (3, h, w)),
    "yuvj444p": ((1, 1, 1), lambda w, h: (3, h, w)),
    "rgb24": ((3,), lambda w, h: (h, w, 3)),
    "gray": ((1,), lambda w, h: (h, w)),
}
KEEP_FORMATS = frozenset(_KEEP_LAYOUT)


@dataclass
class ScanConfig:
    thumb_size_px: tuple[int, int] = (64, 48)  # cut/brightness signal: big enough for histograms, tiny to store
    analysis_short_side_px: int = 128  # flow/blur images: DIS flow needs ~100 px to see object motion
    grid_step_s: float = 0.5  # candidate pair frames every 0.5 s: 8 gap choices in 0.5-4 s, small to pass between stages
    max_grid_frames: int = 1200  # long videos get a coarser grid: bounds the analysis images to ~40 MB a video
    skip_nonref: bool = True  # skip non-reference frames in the scan (half the decode work with B-frames)
    # ...except the frames just before a keyframe: encoders put keyframes at cuts, and seeing
    # every frame there places such a cut without decoding its group of pictures again
    decode_all_before_keyframe: int = 4
    decode_threads: int = 1  # Ray parallelises over videos; threads inside one decoder only add CPU overhead
    max_decode_errors: int = 0  # a broken packet means broken frames around it: reject the video by default
    # Keep a sample-quality copy of every grid frame so the pairs stage need not decode again
    # (for H.264 that second pass costs as much as the scan). Sized like the samples: the
    # pipeline config copies `pairs.short_side_px` / `pairs.max_long_side_px` into these two.
    keep_frames: bool = True
    frame_short_side_px: int = 512
    frame_max_long_side_px: int = 1024
    # Bound on the kept copies of one video (~1 MB each at 512 px in 4:2:0, two per second):
    # a 256 MB bound keeps ~4 minutes; the pairs stage decodes frames past it the old way.
    keep_frames_mb: int = 256
    # Every frame at 48x27 RGB for TransNetV2 (set by the shots stage when shots.detector is
    # transnetv2; then every frame is decoded, since the network reads them all): ~4 KB a frame.
    net_frames: bool = False


@dataclass
class KeptFrame:
    """A decoded frame scaled to the sample size, in a pixel format PyAV round-trips exactly."""

    pixels: np.ndarray  # PyAV's array layout for `format` (e.g. (h*3/2, w) for yuv420p)
    format: str
    size: tuple[int, int]  # (width, height) before rotation
    colorspace: int
    color_range: int


class KeptFrames:
    """The scan's sample-quality copies of grid frames, written once into the buffer that the shots
    stage hands on (stages/shots.py pack_arrays writes the scan's other arrays after them).

    Copies into fresh memory cost a page fault per 4 KB (~2.3 us on this VM: 81 MB took 47 ms
    to write the first time, 6 ms the second). Each frame held as an array of its own and then
    copied into the packed buffer was written twice, the second time into fresh memory too: the
    16x synthetic clip's shots stage had 28,000 page faults a run, 22,600 with this. One pixel
    format and size per video: a stream that changes either midway keeps none (the pairs stage
    decodes them).
    """

    HEAD = 128  # bytes left free at the start for the header of the stacked pixels' record

    def __init__(self, limit_bytes: int = -1):
        self.buffer = bytearray(self.HEAD)
        self.limit = limit_bytes
        self.index: list[int] = []
        self.colorspace: list[int] = []
        self.color_range: list[int] = []
        self.format = ""
        self.size = (0, 0)  # (width, height) before rotation
        self.shape: tuple[int, ...] = ()  # of one frame's array
        self.mixed = False

    def __len__(self) -> int:
        return len(self.index)

    def __iter__(self):
        return iter(self.index)

    @property
    def nbytes(self) -> int:
        return len(self.buffer) - self.HEAD

    def wants_more(self) -> bool:
        return not self.mixed and self.nbytes < self.limit

    def add(self, idx: int, frame: av.VideoFrame, size: tuple[int, int]) -> None:
        """`frame` scaled to `size` (width, height, before rotation) with swscale's area filter, appended."""
        out = _sample_frame(frame, size)
        fmt = out.format.name
        plane_bytes, shape_of = _KEEP_LAYOUT[fmt]
        shape = shape_of(out.width, out.height)
        if not self.index:
            self.format, self.size, self.shape = fmt, size, shape
        elif (fmt, size, shape) != (self.format, self.size, self.shape):
            self.mixed = True  # (nothing of it is used: freed now, and no more is kept)
            self.buffer, self.index, self.colorspace, self.color_range = bytearray(self.HEAD), [], [], []
            return
        for plane, bpp in zip(out.planes, plane_bytes):
            rows = np.frombuffer(plane, np.uint8, plane.line_size * plane.height).reshape(plane.height, plane.line_size)
            rows = rows[:, :plane.width * bpp]
            # (a memoryview: `bytearray += ndarray` would be NumPy's element-wise add)
            self.buffer += memoryview(rows if rows.flags.c_contiguous else np.ascontiguousarray(rows))
        self.index.append(idx)
        self.colorspace.append(int(out.colorspace))
        self.color_range.append(int(out.color_range))

    def __getitem__(self, idx: int) -> KeptFrame:
        """One kept frame, its pixels copied out (the buffer grows while the scan runs)."""
        if idx not in self.index:
            raise KeyError(idx)
        k = self.index.index(idx)
        n = math.prod(self.shape)
        pixels = np.frombuffer(self.buffer, np.uint8, n, self.HEAD + k * n).reshape(self.shape).copy()
        return KeptFrame(pixels, self.format, self.size, self.colorspace[k], self.color_range[k])

    def items(self):
        return [(i, self[i]) for i in self]


@dataclass
class Scan:
    """What the scan saw: `index[k]` is the frame index of thumbnail `thumbs[k]`."""

    index: np.ndarray  # int64 (n,), sorted
    thumbs: np.ndarray  # uint8 (n, th, tw) luma
    grid_index: np.ndarray  # int64 (m,), frames with an analysis image
    grid_images: list[np.ndarray] = field(default_factory=list)  # uint8 luma, display orientation
    kept: KeptFrames = field(default_factory=KeptFrames)  # sample-quality copies of grid frames
    decoded_frames: int = 0
    net_frames: np.ndarray | None = None  # uint8 (n, 27, 48, 3) RGB of frames `index`, when asked for


_PLANAR_LUMA = ("yuv", "yuvj", "nv12", "nv21", "gray")  # formats whose first plane is the luma


def _luma(frame: av.VideoFrame, bits: int) -> np.ndarray:
    if frame.format.name.startswith(_PLANAR_LUMA):
        plane = frame.planes[0]
        if bits > 8:
            y = np.frombuffer(plane, np.uint16).reshape(frame.height, plane.line_size // 2)[:, :frame.width]
            return (y >> (bits - 8)).astype(np.uint8)
        return np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, :frame.width]
    if frame.format.name == "rgb24":  # e.g. cinepak: OpenCV's conversion is ~10x cheaper than swscale's here
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_RGB2GRAY)
    return frame.to_ndarray(format="gray")


def _open(path: str, cfg: ScanConfig):
    container = av.open(path)
    stream = container.streams.video[0]
    stream.codec_context.thread_count = cfg.decode_threads  # also keeps per-packet skip_frame changes in effect
    return container, stream


def _frame_index(info: ProbeInfo, frame: av.VideoFrame) -> int:
    ts = frame.pts if frame.pts is not None else frame.dts
    if ts is None:
        return -1
    k = int(np.searchsorted(info.frame_pts, ts))
    if k >= len(info.frame_pts) or (k > 0 and ts - info.frame_pts[k - 1] < info.frame_pts[k] - ts):
        k -= 1  # nearest entry: some streams carry slightly different frame and packet timestamps
    return max(k, 0)


class _SpanIndex:
    """Frame index of a decoded frame within frames `first`..`last` (else `_frame_index`'s nearest):
    a dict of their exact timestamps, ~0.1 us a frame against ~10 us for a NumPy search."""

    def __init__(self, info: ProbeInfo, first: int, last: int):
        self.info = info
        self.exact = dict(zip(info.frame_pts[first:last + 1].tolist(), range(first, last + 1)))

    def __call__(self, frame: av.VideoFrame) -> int:
        k = self.exact.get(frame.pts if frame.pts is not None else frame.dts)
        return k if k is not None else _frame_index(self.info, frame)


def _shrink(y: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Average `y` down to `size` cheaply: a strided view, a bilinear step to exactly 2x, then a 2x2 area mean.

    OpenCV's area resize at a non-integer ratio costs ~0.5 ms at 640x360 and ~5 ms at 1080p;
    this costs ~0.02 ms and averages the same neighbourhoods closely enough for cut and motion signals.
    """
    w, h = size
    step = max(1, min(y.shape[1] // (2 * w), y.shape[0] // (2 * h)))
    v = y[::step, ::step]
    if v.shape[:2] != (2 * h, 2 * w):
        v = cv2.resize(v, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(v, size, interpolation=cv2.INTER_AREA)


def analysis_size(info: ProbeInfo, short_side_px: int) -> tuple[int, int]:
    """(width, height) of analysis images before rotation; fixed per video, whatever size frames decode at."""
    s = short_side_px / min(info.width, info.height)
    return max(1, round(info.width * s)), max(1, round(info.height * s))


def _analysis_image(y: np.ndarray, size: tuple[int, int], rotation_deg: int) -> np.ndarray:
    img = _shrink(y, size)
    return np.ascontiguousarray(np.rot90(img, rotation_deg // 90)) if rotation_deg % 360 else img


def fit_size(width: int, height: int, short_side_px: int, max_long_side_px: int) -> tuple[int, int]:
    """Output size: short side to `short_side_px`, long side at most `max_long_side_px`, never upscaled."""
    short, long_ = min(width, height), max(width, height)
    s = min(1.0, short_side_px / short, max_long_side_px / long_)
    w, h = max(2, round(width * s)), max(2, round(height * s))
    return w - w % 2, h - h % 2


_SCALER = VideoReformatter()  # one per process: it caches swscale's context (area filters cost ms to set up)
_NET_SCALER = VideoReformatter()  # its own: one cached context per output size


def net_frame(frame: av.VideoFrame) -> np.ndarray:
    """The frame as TransNetV2 reads it: 48x27 RGB, bicubic (what the package's ffmpeg pipe gives)."""
    return _NET_SCALER.reformat(frame, width=48, height=27, format="rgb24", interpolation="BICUBIC",
                                threads=1).to_ndarray()


def _sample_frame(frame: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    """`frame` scaled to `size` (width, height, before rotation) with swscale's area filter, in a kept format."""
    fmt = frame.format.name if frame.format.name in KEEP_FORMATS else "rgb24"
    return _SCALER.reformat(frame, width=size[0], height=size[1], format=fmt, interpolation="AREA", threads=1)


def keep_frame(frame: av.VideoFrame, size: tuple[int, int]) -> KeptFrame:
    """`frame` scaled to `size` as a KeptFrame of its own."""
    out = _sample_frame(frame, size)
    return KeptFrame(out.to_ndarray(), out.format.name, size, int(out.colorspace), int(out.color_range))


def sample_rgb(kept: KeptFrame, rotation_deg: int) -> np.ndarray:
    """Upright RGB of a kept frame: the one conversion every sample frame goes through."""
    frame = av.VideoFrame.from_ndarray(kept.pixels, format=kept.format)
    if (frame.width, frame.height) != kept.size:
        raise ValueError(f"kept frame is {frame.width}x{frame.height}, its record says {kept.size}")
    frame.colorspace, frame.color_range = kept.colorspace, kept.color_range
    rgb = frame.to_ndarray(format="rgb24", threads=1)
    k = (rotation_deg % 360) // 90
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def scan(path: str, info: ProbeInfo, cfg: ScanConfig, first: int = 0, last: int | None = None) -> Scan:
    """The one pass: thumbnails of decoded frames; analysis images and kept copies on the time grid.
    `first`..`last` (frame indices): one window of a long video (datagen/video/windows.py), reached
    by a seek to the keyframe before it; the grid step is the configured one unless the span
    holds more than `max_grid_frames` of it."""
    times = info.times_s
    last = len(times) - 1 if last is None else last
    t0, t1 = float(times[first]), float(times[last])
    grid_t = np.arange(t0, t1 + 1e-9, max(cfg.grid_step_s, (t1 - t0) / cfg.max_grid_frames))
    # The grid frames are the first frames at or after each grid time; in a scan that skips
    # frames the nearest decoded one stands in (at most a frame or two later).
    pending = np.unique(np.searchsorted(times, grid_t).clip(first, last))
    seen: dict[int, np.ndarray] = {}
    net: dict[int, np.ndarray] = {}
    grid: dict[int, np.ndarray] = {}
    kept = KeptFrames(cfg.keep_frames_mb * 2**20 if cfg.keep_frames else -1)
    keep_size = fit_size(info.width, info.height, cfg.frame_short_side_px, cfg.frame_max_long_side_px)
    next_grid = 0  # position in `pending` of the next grid frame to fill
    errors, decoded = 0, 0
    container, stream = _open(path, cfg)
    ctx = stream.codec_context
    key_pts = np.asarray(info.keyframe_pts)
    near_key = info.frame_pts[np.clip(np.searchsorted(info.frame_pts, key_pts) - cfg.decode_all_before_keyframe,
                                      0, len(info.frame_pts) - 1)]  # first pts decoded in full before each key
    # per packet and per frame, plain Python lookups: NumPy's per-call cost was ~5 % of a scan's CPU
    key_list, near_list = key_pts.tolist(), near_key.tolist()
    frame_index = _SpanIndex(info, first, last)
    pending_list = pending.tolist()
    skip_mode = None
    bits = info.bit_depth
    size = analysis_size(info, cfg.analysis_short_side_px)
    with container:
        packets = container.demux(stream) if first == 0 else _packets_from_key(container, stream, info, first)
        past_window = False  # the decoder gives frames in display order: after `last`, nothing is wanted
        while not past_window:
            try:
                packet = next(packets)
                if cfg.skip_nonref and not cfg.net_frames:  # the network reads every frame
                    ts = packet.pts if packet.pts is not None else packet.dts
                    j = bisect.bisect_left(key_list, ts) if ts is not None else len(key_list)
                    mode = "DEFAULT" if j < len(key_list) and ts >= near_list[j] else "NONREF"
                    if mode != skip_mode:
                        ctx.skip_frame = skip_mode = mode
                frames = ctx.decode(packet)
            except StopIteration:
                break
            except av.FFmpegError as e:
                errors += 1
                if errors > cfg.max_decode_errors:
                    raise VideoError("decode_error", f"after {decoded} frames: {e}") from None
                continue
            for frame in frames:
                decoded += 1
                idx = frame_index(frame)
                if idx < first or idx in seen:  # (before the window: decoded only to reach it)
                    continue
                if idx > last:
                    past_window = True
                    break
                y = _luma(frame, bits)
                seen[idx] = _shrink(y, cfg.thumb_size_px)
                if cfg.net_frames:
                    net[idx] = net_frame(frame)
                if next_grid < len(pending_list) and idx >= pending_list[next_grid]:
                    grid[idx] = _analysis_image(y, size, info.rotation_deg)
                    next_grid = bisect.bisect_right(pending_list, idx)
                    if kept.wants_more():
                        kept.add(idx, frame, keep_size)
    if not seen:
        raise VideoError("decode_error", "no frame decoded")
    index = np.array(sorted(seen), np.int64)
    gidx = np.array(sorted(grid), np.int64)
    return Scan(index=index, thumbs=np.stack([seen[i] for i in index]), grid_index=gidx,
                grid_images=[grid[i] for i in gidx], kept=kept, decoded_frames=decoded,
                net_frames=np.stack([net[i] for i in index]) if cfg.net_frames else None)


def _packets_from_key(container, stream, info: ProbeInfo, first: int):
    """Seek to the keyframe at or before frame `first` and demux from there."""
    keys = info.keyframe_pts[info.keyframe_pts <= info.frame_pts[first]]
    container.seek(int(keys[-1]) if len(keys) else int(info.frame_pts[0]), stream=stream, backward=True)
    return container.demux(stream)


def decode_window(path: str, info: ProbeInfo, cfg: ScanConfig, first: int, last: int) -> dict[int, np.ndarray]:
    """Thumbnails of every frame with index in [first, last] (best effort: the scan judged the stream decodable).

    Up to `first` only reference frames are decoded (nothing else is needed to reach it).
    """
    container, stream = _open(path, cfg)
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


def decode_frames(path: str, info: ProbeInfo, indices: list[int], short_side_px: int, max_long_side_px: int,
                  decoder: str = "pyav", skip_nonref: bool = True) -> dict[int, np.ndarray]:
    """Full-quality RGB frames (display orientation, resized) for `indices`.

    With PyAV the pixels equal those of the scan's kept copies (same scaling, same conversion).
    `skip_nonref` must match the scan: the frames it chose are reference frames, and the
    same decode mode names them by the same timestamps.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return {}
    frames = _decord_frames(path, info, wanted, short_side_px, max_long_side_px) if decoder == "decord" else None
    if frames is None:
        size = fit_size(info.width, info.height, short_side_px, max_long_side_px)
        kept = _pyav_frames(path, info, wanted, skip_nonref, size)
        if skip_nonref and len(kept) < len(wanted):
            kept.update(_pyav_frames(path, info, [i for i in wanted if i not in kept], False, size))
        frames = {i: sample_rgb(k, info.rotation_deg) for i, k in kept.items()}
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoError("decode_error", f"frames {missing[:5]} do not decode")
    return frames


def _decord_frames(path: str, info: ProbeInfo, wanted: list[int], short_side_px: int,
                   max_long_side_px: int) -> dict[int, np.ndarray] | None:
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
    out = {}
    for k, i in enumerate(wanted):
        h, w = batch[k].shape[:2]
        size = fit_size(w, h, short_side_px, max_long_side_px)
        out[i] = batch[k] if size == (w, h) else cv2.resize(batch[k], size, interpolation=cv2.INTER_AREA)
    return out


def _pyav_frames(path: str, info: ProbeInfo, wanted: list[int], skip_nonref: bool,
                 size: tuple[int, int]) -> dict[int, KeptFrame]:
    """One seek per group of pictures that holds wanted frames, then decode forward to the last of them."""
    key_of = np.searchsorted(info.keyframe_pts, info.frame_pts[wanted], side="right")
    out: dict[int, KeptFrame] = {}
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
                            out[idx] = keep_frame(frame, size)
                            todo.discard(idx)
                    ts = packet.pts if packet.pts is not None else packet.dts
                    if not todo or (ts is not None and ts > limit):
                        break
            except av.FFmpegError:
                pass  # what did not come out is reported missing by the caller
            ctx.flush_buffers()
    return out
