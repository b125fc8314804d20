"""Turn stored members (JPEG, 16-bit depth PNG, edge/mask PNG) into small viewable images."""
from __future__ import annotations

import base64
import io

import cv2
import numpy as np
from PIL import Image

from datagen.media import decode_image
from schemas.tasks import ImageKind

THUMB_SIDE_PX = 128  # on the page: 24 samples x 9 tasks x ~3 images stay ~2 MB; each links to its full image
THUMB_JPEG_QUALITY = 70  # a thumbnail is for recognising the scene, not judging its pixels
EDGE_ON_LEVEL = 32  # after a box downscale: a pixel an eighth covered by edge stays on
MASK_RGB = (255, 0, 96)  # magenta-red: stands out on most natural scenes
MASK_ALPHA = 0.5


def viewable(data: bytes, kind: ImageKind) -> np.ndarray:
    """Decode a member into an HxWx3 uint8 image a browser can show as-is."""
    array = decode_image(data, kind)
    if kind is ImageKind.rgb:
        return array
    if kind is ImageKind.depth16:
        return false_colour(array)
    return np.repeat(array[..., None], 3, axis=2)


def false_colour(depth: np.ndarray) -> np.ndarray:
    """Relative depth -> inferno colours, stretched to the map's own range (its scale is arbitrary)."""
    lo, hi = float(depth.min()), float(depth.max())
    scaled = np.zeros(depth.shape, np.uint8) if hi <= lo else ((depth - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def overlay_mask(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend a 0/255 mask over an RGB image (the mask is resized to the image if they differ)."""
    if mask.shape[:2] != rgb.shape[:2]:
        mask = cv2.resize(mask, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
    inside = mask > 127
    out = rgb.astype(np.float32)
    out[inside] = (1 - MASK_ALPHA) * out[inside] + MASK_ALPHA * np.asarray(MASK_RGB, np.float32)
    return out.astype(np.uint8)


def data_uri(rgb: np.ndarray, kind: ImageKind, max_side_px: int = THUMB_SIDE_PX) -> str:
    """A thumbnail as a `data:` URI: JPEG for photos and false-coloured depth, a 1-bit PNG for
    edge and mask maps (any covered pixel stays on, so thin edges survive the downscale)."""
    im = Image.fromarray(rgb, "RGB")
    binary = kind in (ImageKind.edge, ImageKind.mask)
    if binary:
        im = im.convert("L")
    scale = max_side_px / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BOX)
    buf = io.BytesIO()
    if binary:
        im.point(lambda v: 255 if v >= EDGE_ON_LEVEL else 0).convert("1").save(buf, "PNG", optimize=True)
        mime = "image/png"
    else:
        im.save(buf, "JPEG", quality=THUMB_JPEG_QUALITY)
        mime = "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def full_image(data: bytes, kind: ImageKind, shown: np.ndarray) -> tuple[bytes, str]:
    """The file a thumbnail links to: stored bytes where a browser shows them as they are
    (JPEG photos, 8-bit edge and mask PNGs), the false-coloured map for 16-bit depth."""
    if kind is not ImageKind.depth16:
        return data, "jpg" if data[:2] == b"\xff\xd8" else "png"
    buf = io.BytesIO()
    Image.fromarray(shown, "RGB").save(buf, "PNG")
    return buf.getvalue(), "png"
