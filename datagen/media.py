"""Encoding and decoding of image members, the one place that knows the stored formats."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from schemas.tasks import ImageKind


def encode_image(array: np.ndarray, kind: ImageKind = ImageKind.rgb, rgb_ext: str = "jpg", quality: int = 90) -> bytes:
    """Encode an HxWx3 uint8 (rgb), HxW uint16 (depth16) or HxW uint8 (edge/mask) array."""
    buf = io.BytesIO()
    if kind is ImageKind.rgb:
        im = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "RGB")
        if rgb_ext == "jpg":
            im.save(buf, "JPEG", quality=quality)
        else:
            im.save(buf, "PNG", compress_level=1)
    elif kind is ImageKind.depth16:
        Image.fromarray(np.ascontiguousarray(array, dtype=np.uint16)).save(buf, "PNG", compress_level=1)
    else:
        Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), "L").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def decode_image(data: bytes, kind: ImageKind = ImageKind.rgb) -> np.ndarray:
    """Inverse of encode_image: HxWx3 uint8, HxW uint16 or HxW uint8."""
    with Image.open(io.BytesIO(data)) as im:
        if kind is ImageKind.rgb:
            return np.asarray(im.convert("RGB"))
        if kind is ImageKind.depth16:
            return np.asarray(im).astype(np.uint16)
        return np.asarray(im.convert("L"))
