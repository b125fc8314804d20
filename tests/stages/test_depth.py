import json

import numpy as np
import pytest
from transformers import DepthAnythingForDepthEstimation

from datagen import UserError
from datagen.config import from_dict
from datagen.media import decode_image
from datagen.vision.preprocess import depth_input_size
from schemas.columns import DEPTH_A, DEPTH_B, FAILED_REASON, provenance_column
from schemas.tasks import ImageKind
from stages.depth import DepthConfig, DepthStage
from tests.stages.vision_inputs import batch, pair_row, tiny_depth_dir  # noqa: F401 -- fixture


@pytest.fixture(scope="module")
def stage(tiny_depth_dir):
    # 70 px input keeps the tiny model fast; the real default is 518.
    return DepthStage(from_dict(DepthConfig, {"model": tiny_depth_dir, "input_px": 70}))


def test_depth_is_uint16_at_frame_size_full_range_and_deterministic(stage):
    rows = [pair_row(64, 48), pair_row(50, 90, seed=1)]  # two sizes: two input-shape groups
    first, second = stage(batch(rows)), stage(batch(rows))
    assert first[FAILED_REASON] == [None, None]
    for i, (w, h) in enumerate([(64, 48), (50, 90)]):
        for col in (DEPTH_A, DEPTH_B):
            d = decode_image(first[col][i], ImageKind.depth16)
            assert d.dtype == np.uint16 and d.shape == (h, w)
            assert d.min() == 0 and d.max() == 65535  # per-frame min-max normalisation
            assert first[col][i] == second[col][i]  # same input, same bytes


def test_batch_of_n_equals_n_single_calls(stage):
    rows = [pair_row(64, 48, seed=s) for s in range(3)]
    together = stage(batch(rows))
    for i, row in enumerate(rows):
        alone = stage(batch([row]))
        for col in (DEPTH_A, DEPTH_B):
            t = decode_image(together[col][i], ImageKind.depth16).astype(np.int64)
            a = decode_image(alone[col][0], ImageKind.depth16).astype(np.int64)
            assert np.abs(t - a).max() <= 64  # within 0.1% of the range: batched float math only


def test_provenance_records_model_and_normalisation(stage, tiny_depth_dir):
    out = stage(batch([pair_row()]))
    prov = json.loads(out[provenance_column("depth")][0])
    assert prov["model_id"] == tiny_depth_dir and prov["revision"].startswith("sha256:")
    assert prov["params"]["scaling"] == "per_frame_minmax" and prov["params"]["range"] == [0, 65535]
    assert prov["params"]["quantity"] == "relative_inverse_depth" and prov["params"]["input_px"] == 70


def test_only_configured_frames_and_bad_images_marked(tiny_depth_dir):
    only_b = DepthStage(DepthConfig(model=tiny_depth_dir, input_px=42, frames=["b"]))
    bad = pair_row()
    bad["image_a"] = b"not an image"
    out = only_b(batch([pair_row(), bad]))
    assert out[FAILED_REASON] == [None, "bad_image"]
    assert DEPTH_A not in out and out[DEPTH_B][0] is not None and out[DEPTH_B][1] is None


def test_model_is_loaded_once_per_stage_not_per_batch(tiny_depth_dir, monkeypatch):
    calls = []
    original = DepthAnythingForDepthEstimation.from_pretrained.__func__
    monkeypatch.setattr(DepthAnythingForDepthEstimation, "from_pretrained",
                        classmethod(lambda cls, *a, **k: calls.append(a) or original(cls, *a, **k)))
    s = DepthStage(DepthConfig(model=tiny_depth_dir, input_px=42))
    for _ in range(2):
        s(batch([pair_row()]))
    assert len(calls) == 1


def test_bad_model_path_and_bad_frames_key_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"depth\.model.*save_pretrained"):
        DepthStage(DepthConfig(model=str(tmp_path / "missing")))
    with pytest.raises(UserError, match=r"frames\[0\]"):
        from_dict(DepthConfig, {"frames": ["c"]})


def test_input_size_follows_depth_anything_processor_rule():
    # keep aspect ratio, scale as little as possible, sides rounded to multiples of 14
    assert depth_input_size(640, 360, 518, 14) == (294, 518)
    assert depth_input_size(360, 640, 518, 14) == (518, 294)
    assert depth_input_size(518, 518, 518, 14) == (518, 518)
    assert depth_input_size(1920, 1080, 518, 14) == (518, 924)


def test_runs_in_bfloat16_as_on_gpu(tiny_depth_dir):
    out = DepthStage(DepthConfig(model=tiny_depth_dir, dtype="bfloat16", input_px=42))(batch([pair_row()]))
    d = decode_image(out[DEPTH_A][0], ImageKind.depth16)
    assert out[FAILED_REASON] == [None] and d.shape == (48, 64) and d.max() == 65535
