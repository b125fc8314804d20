"""The three stages as Ray Data operators give the same pairs as calling them directly."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from schemas.columns import (FAILED_STAGE, FRAME_A, FRAME_B, IMAGE_A, IMAGE_B, PAIR, SHOT, VIDEO_ID, VIDEO_URI,
                             batch_to_rows, rows_to_batch)
from stages.ingest import IngestConfig, IngestStage
from stages.pairs import PairsConfig, PairsStage
from stages.shots import ShotsConfig, ShotsStage

ASSETS = Path(__file__).resolve().parents[2] / "datagen" / "assets" / "videos"
STAGES = ((IngestStage, IngestConfig()), (ShotsStage, ShotsConfig()), (PairsStage, PairsConfig()))


def summary(rows):
    return sorted((r[VIDEO_ID], r[SHOT], r[PAIR], r[FRAME_A], r[FRAME_B], hashlib.sha1(r[IMAGE_A]).hexdigest(),
                   hashlib.sha1(r[IMAGE_B]).hexdigest()) for r in rows if r[FAILED_STAGE] is None)


@pytest.mark.slow
def test_ray_data_operators_match_direct_calls(ray_local):
    items = [{VIDEO_URI: str(ASSETS / n)} for n in ("box.mp4", "tree.avi")]
    batch = rows_to_batch(items)
    for cls, cfg in STAGES:
        batch = cls(cfg)(batch)
    direct = batch_to_rows(batch)

    ds = ray_local.data.from_items(items)
    for cls, cfg in STAGES:
        ds = ds.map_batches(cls, fn_constructor_kwargs={"config": cfg}, batch_size=1, concurrency=1)
    via_ray = [{k: (v.item() if hasattr(v, "item") and not isinstance(v, bytes) else v) for k, v in r.items()}
               for r in ds.take_all()]
    assert summary(direct) and summary(via_ray) == summary(direct)
    assert {r[VIDEO_URI] for r in via_ray} == {i[VIDEO_URI] for i in items}
