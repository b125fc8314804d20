"""Tiny random vision models on disk and small frame pairs, shared by the vision stage tests."""
from __future__ import annotations

import numpy as np
import pytest

from datagen.media import encode_image
from datagen.models.tiny_vision import build_tiny_depth_anything, build_tiny_sam2
from schemas.columns import CAPTION, HEIGHT, IMAGE_A, IMAGE_B, WIDTH


@pytest.fixture(scope="session")
def tiny_sam2_dir(tmp_path_factory):
    return str(build_tiny_sam2(tmp_path_factory.mktemp("sam2")))


@pytest.fixture(scope="session")
def tiny_depth_dir(tmp_path_factory):
    return str(build_tiny_depth_anything(tmp_path_factory.mktemp("depth")))


def frame_pair(width: int = 64, height: int = 48, seed: int = 0, shift_px: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A textured frame with a bright square, and the same frame with the square moved right."""
    rng = np.random.default_rng(seed)
    a = (rng.integers(0, 60, (height, width, 3)) + np.linspace(0, 80, width)[None, :, None]).astype(np.uint8)
    b = a.copy()
    a[10:30, 10:30] = 230
    b[10:30, 10 + shift_px:30 + shift_px] = 230
    return a, b


def pair_row(width: int = 64, height: int = 48, seed: int = 0, caption: str | None = None) -> dict:
    a, b = frame_pair(width, height, seed)
    return {IMAGE_A: encode_image(a, rgb_ext="png"), IMAGE_B: encode_image(b, rgb_ext="png"),
            WIDTH: width, HEIGHT: height, CAPTION: caption}


def batch(rows: list[dict]) -> dict[str, list]:
    columns = dict.fromkeys(k for r in rows for k in r)
    return {k: [r.get(k) for r in rows] for k in columns}
