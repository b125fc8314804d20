"""What changed between two frames, measured on small luma images.

Dense optical flow (OpenCV DIS) gives per-pixel motion; a similarity transform fitted to
it with RANSAC is the camera (pan, tilt, zoom), fitted to the background since RANSAC leaves
moving objects out: below the motion bounds the camera is still whatever the share of
inliers; a real motion that most of the picture agrees with is a pan/tilt/zoom; what the
transform does not explain is object motion. A camera whose steps between A and B go back
and forth (handheld shake) is irregular however small its net motion (pairing.py): that path is
measured between every two decoded frames (`frame_shifts`, phase correlation of the scan's
thumbnails), since a sway of about a second between grid frames half a second apart looks like
a still camera or a slow tilt. Blur is the
variance of the Laplacian. Magnitudes are fractions of the image diagonal so they do not
depend on the analysis resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np


@dataclass
class MotionConfig:
    grid_step_px: int = 4  # flow sampled every 4 px: ~1,500 points at 128 px, plenty for RANSAC
    ransac_px: float = 1.0  # a point agrees with the camera model within 1 px at 128 px (DIS noise ~0.3 px)
    camera_min_inliers: float = 0.5  # the camera model must explain most of the frame to call it camera motion
    camera_min_shift: float = 0.01  # 1% of the diagonal (~1.5 px at 128 px) is the smallest pan we call one
    camera_min_zoom: float = 0.02  # 2% scale change between the frames is a zoom
    object_px: float = 1.0  # residual motion above 1 px at 128 px counts as a moving pixel


def frame_shifts(thumbs: np.ndarray, dead_zone_px: float = 0.1) -> np.ndarray:
    """(n, 2) float32: the shift of each thumbnail's content from the one before (0 for the first),
    fractions of the thumbnail's diagonal, by phase correlation (~30 us a 64x48 pair). Shifts under
    `dead_zone_px` (the estimate's noise on a still picture, ~0.05 px) count as 0, so a still
    camera's path sums to 0 rather than to its noise."""
    n = len(thumbs)
    out = np.zeros((n, 2), np.float32)
    if n < 2:
        return out
    h, w = thumbs.shape[1:3]
    window = cv2.createHanningWindow((w, h), cv2.CV_32F)
    diag = float(np.hypot(w, h))
    block = 256  # frames converted to float32 at a time: one call instead of one per frame, memory bounded
    prev = thumbs[0].astype(np.float32)
    for s in range(1, n, block):
        floats = thumbs[s:s + block].astype(np.float32)
        for i, cur in enumerate(floats, s):
            (dx, dy), _ = cv2.phaseCorrelate(prev, cur, window)
            if math.hypot(dx, dy) >= dead_zone_px:
                out[i] = (dx / diag, dy / diag)
            prev = cur
    return out


def blur_score(img: np.ndarray) -> float:
    """Variance of the Laplacian: low means blurry (motion blur, out of focus, flat)."""
    return float(cv2.Laplacian(img, cv2.CV_32F).var())


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a - b| of two uint8 images (0-1). OpenCV's L1 norm sums in integers, as the mean of
    their int16 difference did, and costs ~8x less."""
    return cv2.norm(a, b, cv2.NORM_L1) / a.size / 255.0


_DIS: dict[tuple, cv2.DISOpticalFlow] = {}


def _flow(a: np.ndarray, b: np.ndarray, preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST) -> np.ndarray:
    key = (a.shape, preset)
    dis = _DIS.get(key)
    if dis is None:  # one instance per process, size and preset: it allocates its pyramids for the size it sees
        dis = _DIS[key] = cv2.DISOpticalFlow_create(preset)
        # An instance's first flow differs from every later one (by up to 0.07 px, measured), and
        # later ones do not depend on what came before: one flow thrown away keeps a video's facts
        # the same whichever video a worker happened to process first.
        dis.calc(a, b, None)
    return dis.calc(a, b, None)


def warp_error(a: np.ndarray, b: np.ndarray, flow: np.ndarray | None = None) -> float:
    """How badly the flow from `a` to `b` explains `b`: `b` warped back onto `a`, mean |difference| (0-1).

    Large when flow fails: too much motion, new content, occlusion, or no continuity at all (a cut).
    """
    h, w = a.shape
    flow = _flow(a, b) if flow is None else flow
    gx, gy = _pixel_grid(h, w)
    warped = cv2.remap(b, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return mean_abs_diff(warped, a)


@lru_cache(maxsize=16)
def _pixel_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y of every pixel (float32), read-only: built once per image size, not once per flow."""
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    gx.flags.writeable = gy.flags.writeable = False
    return gx, gy


@lru_cache(maxsize=16)
def _flow_samples(h: int, w: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, columns, (x, y) float32 points) of the flow sampled every `step` px, read-only."""
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    rows, cols = ys.ravel(), xs.ravel()
    src = np.stack([cols, rows], 1).astype(np.float32)
    for a in (rows, cols, src):
        a.flags.writeable = False
    return rows, cols, src


def step_motion(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(warp error, median flow x, median flow y as fractions of the diagonal) of one short step: the
    median follows the background as long as moving objects cover less than half of the picture."""
    flow = _flow(a, b, cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)  # ~2x cheaper: a step only has to be explained
    diag = float(np.hypot(*a.shape))
    # both medians in one call, over a contiguous copy (two calls on strided channel views cost ~40 % more)
    mx, my = np.median(flow.reshape(-1, 2).T.copy(), axis=1)
    return (warp_error(a, b, flow), float(mx) / diag, float(my) / diag)


def motion_facts(a: np.ndarray, b: np.ndarray, cfg: MotionConfig) -> dict:
    """Flow statistics, camera-motion class and object-motion measure for luma images `a` -> `b`."""
    h, w = a.shape
    diag = float(np.hypot(h, w))
    flow = _flow(a, b)
    rows, cols, src = _flow_samples(h, w, cfg.grid_step_px)
    vec = flow[rows, cols]
    dst = src + vec
    mag = np.linalg.norm(vec, axis=1)
    model, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=cfg.ransac_px)
    still = mag < cfg.ransac_px
    if model is None or still.mean() >= inliers.mean():
        # more of the picture stands still than agrees with the fitted motion: the fit followed a
        # large moving object, and the background (what stands still) says the camera is still
        model, inliers = np.array([[1, 0, 0], [0, 1, 0]], np.float64), still[:, None].astype(np.uint8)
    pred = src @ model[:, :2].T + model[:, 2]
    residual = np.linalg.norm(dst - pred, axis=1)
    moving = residual > cfg.object_px
    center = np.array([w / 2, h / 2])
    shift = center @ model[:, :2].T + model[:, 2] - center
    scale = float(np.sqrt(abs(np.linalg.det(model[:, :2]))))
    inlier_share = float(inliers.mean())
    return {
        "flow_median": round(float(np.median(mag)) / diag, 5),
        "flow_p90": round(float(np.percentile(mag, 90)) / diag, 5),
        "warp_error": round(warp_error(a, b, flow), 5),
        "camera_motion": _camera_class(shift / diag, scale, inlier_share, cfg),
        "camera_shift": [round(float(shift[0]) / diag, 5), round(float(shift[1]) / diag, 5)],
        "camera_zoom": round(scale, 4),
        "camera_inliers": round(inlier_share, 3),
        "object_motion_area": round(float(moving.mean()), 4),
        "object_motion": round(float(residual[moving].mean()) / diag, 5) if moving.any() else 0.0,
    }


def _camera_class(shift: np.ndarray, scale: float, inlier_share: float, cfg: MotionConfig) -> str:
    """Names follow the camera, not the content: content sliding left means the camera pans right.

    The fit is RANSAC's, which leaves moving objects out as outliers: a fitted motion below the
    bounds is a still camera however few points agree (a large moving object, flat background),
    and only a real fitted motion that explains too little of the picture is `complex`.
    """
    dx, dy = float(shift[0]), float(shift[1])
    zoom = abs(scale - 1) > cfg.camera_min_zoom
    if not zoom and max(abs(dx), abs(dy)) < cfg.camera_min_shift:
        return "static"
    if inlier_share < cfg.camera_min_inliers:
        return "complex"
    if zoom:
        return "zoom_in" if scale > 1 else "zoom_out"
    if abs(dx) >= abs(dy):
        return "pan_right" if dx < 0 else "pan_left"
    return "tilt_down" if dy < 0 else "tilt_up"
