"""Asset cut-outs and canvases with an object removed, from SAM2 masks."""
from __future__ import annotations

import numpy as np

NEUTRAL_GRAY = 127  # UniReal-style neutral background: carries no colour cue


def mask_box(mask: np.ndarray) -> list[int] | None:
    """Tight x0,y0,x1,y1 box (x1/y1 exclusive, pixels) of a binary mask; None when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def cut_out(image: np.ndarray, mask: np.ndarray, pad_frac: float = 0.08) -> np.ndarray | None:
    """The object on a neutral background, cropped to its box plus a margin."""
    box = mask_box(mask)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    pad = int(round(pad_frac * max(x1 - x0, y1 - y0)))
    h, w = mask.shape
    x0, y0, x1, y1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    crop = image[y0:y1, x0:x1].copy()
    crop[mask[y0:y1, x0:x1] == 0] = NEUTRAL_GRAY
    return crop


def remove_region(image: np.ndarray, mask: np.ndarray, grow_px: int = 4) -> np.ndarray:
    """The image with the object's (slightly grown) region blanked to neutral gray."""
    import cv2

    region = mask > 0
    if grow_px > 0:
        kernel = np.ones((2 * grow_px + 1, 2 * grow_px + 1), np.uint8)
        region = cv2.dilate(region.astype(np.uint8), kernel) > 0
    out = image.copy()
    out[region] = NEUTRAL_GRAY
    return out
