"""The transformers backend on a tiny random Qwen2-VL saved to disk and loaded like a hub checkpoint."""
import json

import pytest

from datagen import UserError
from datagen.models.tiny_vlm import build_tiny_vlm
from schemas import columns as C
from stages.caption import CaptionConfig, CaptionStage
from tests.caption.frames import REASONS, batch


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(scope="module")
def stage(model_dir):
    # Small strings and one object keep the random model's answers ~100 tokens.
    cfg = CaptionConfig(backend="transformers", model=model_dir, device="cpu", max_image_side_px=112,
                        max_text_chars=12, max_objects=1, max_new_tokens=160, max_retries=1)
    return CaptionStage(cfg)


@pytest.fixture(scope="module")
def batch_out(stage):
    return stage(batch(4))


def test_answers_are_schema_true_captions_or_failure_rows(batch_out):
    ok = [i for i in range(4) if batch_out[C.FAILED_REASON][i] is None]
    assert ok, "grammar-constrained decoding should make at least one random answer valid"
    for i in range(4):
        if i in ok:
            cap = json.loads(batch_out[C.CAPTION][i])
            assert {"caption_a", "caption_b", "instruction", "edit_type", "objects"} <= set(cap)
            assert all(isinstance(cap[k], str) and cap[k] for k in ("caption_a", "caption_b", "instruction"))
            w, h = batch_out[C.WIDTH][i], batch_out[C.HEIGHT][i]
            for obj in cap["objects"]:
                x0, y0, x1, y1 = obj["box"]
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        else:
            assert batch_out[C.FAILED_REASON][i] in REASONS and batch_out[C.FAILED_STAGE][i] == "caption"


def test_provenance_names_the_loaded_weights(batch_out, model_dir):
    i = batch_out[C.FAILED_REASON].index(None)
    prov = json.loads(batch_out[C.provenance_column("caption")][i])
    assert prov["model_id"] == model_dir and prov["revision"].startswith("sha256:")
    assert prov["params"]["backend"] == "transformers" and prov["params"]["max_new_tokens"] == 160


def test_batch_of_n_equals_n_single_calls(stage, batch_out):
    rows = batch(4)
    for i in range(4):
        single = stage({k: [v[i]] for k, v in rows.items()})
        assert single[C.CAPTION][0] == batch_out[C.CAPTION][i]
        assert single[C.FAILED_REASON][0] == batch_out[C.FAILED_REASON][i]


def test_undecodable_image_is_a_failure_row_not_a_crash(stage):
    rows = batch(1)
    rows[C.IMAGE_A] = [b"not an image"]
    out = stage(rows)
    assert out[C.FAILED_REASON] == ["bad_image"]


def test_a_model_that_is_not_a_qwen_vlm_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="bert"):
        CaptionStage(CaptionConfig(backend="transformers", model=str(tmp_path), device="cpu"))
