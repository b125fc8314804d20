"""Image members: the encoder the shards' JPEGs come from."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datagen.media import decode_image, encode_image


def _picture(h: int = 120, w: int = 160) -> np.ndarray:
    """Smooth gradients with an edge: content where chroma subsampling and quantisation matter."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, ((x // 20 + y // 20) % 2) * 200 + 20], -1)
    return rgb.astype(np.uint8)


@pytest.mark.parametrize("quality", [75, 90, 95])
def test_jpeg_is_the_same_bytes_pil_writes(quality):
    """OpenCV encodes (it is cheaper); the file must be the one PIL's encoder made before."""
    rgb = _picture()
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "JPEG", quality=quality)
    assert encode_image(rgb, quality=quality) == buf.getvalue()


def test_jpeg_keeps_channel_order_for_strided_input():
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[..., 0] = 250  # pure red: a swapped channel order would decode blue
    wide = np.concatenate([rgb, rgb], 1)[:, ::2]  # a non-contiguous view
    back = decode_image(encode_image(wide))
    assert back.shape == (64, 96, 3)
    assert back[..., 0].mean() > 240 and back[..., 2].mean() < 10
