"""Edited evaluation videos with known boundaries, built once per test session (small: 160x96)."""
from __future__ import annotations

from pathlib import Path

import pytest

from datagen.video import evalset

ASSETS = Path(__file__).resolve().parents[2] / "datagen" / "assets" / "videos"


@pytest.fixture(scope="session")
def edited_videos(tmp_path_factory) -> list[evalset.EvalVideo]:
    # one video per GOP structure, 14 boundaries each: every kind appears in each video
    return evalset.build(tmp_path_factory.mktemp("evalset"), ASSETS, videos=3, boundaries_per_video=14)
