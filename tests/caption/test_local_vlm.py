"""The transformers backend on a tiny random Qwen2-VL saved to disk and loaded like a hub checkpoint."""
import json

import pytest

from datagen import UserError
from datagen.caption.request import Sampling
from datagen.caption.schema import EDIT_TYPES
from datagen.models.tiny_vlm import build_tiny_vlm
from schemas import columns as C
from stages.caption import CaptionConfig, CaptionStage
from tests.caption.frames import batch


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(scope="module")
def stage(model_dir):
    # Short strings keep the random model's answers ~100 tokens. No objects: the grammar bounds
    # box coordinates but cannot order them, and a random model inverts boxes (the validator's
    # box checks are tested in test_validate.py and test_vllm_server.py).
    cfg = CaptionConfig(backend="transformers", model=model_dir, device="cpu", max_image_side_px=112,
                        max_text_chars=12, max_objects=0, max_new_tokens=160, max_retries=1)
    return CaptionStage(cfg)


@pytest.fixture(scope="module")
def batch_out(stage):
    return stage(batch(4))


def test_grammar_makes_even_a_random_model_answer_schema_true_json(batch_out):
    assert batch_out[C.FAILED_REASON] == [None] * 4, batch_out[C.FAILED_DETAIL]
    for i in range(4):
        cap = json.loads(batch_out[C.CAPTION][i])
        assert list(cap) == ["caption_a", "caption_b", "differences", "instruction", "edit_type", "objects"]
        assert all(isinstance(cap[k], str) and 1 <= len(cap[k]) <= 12 for k in ("caption_a", "caption_b", "instruction"))
        assert cap["edit_type"] in EDIT_TYPES and cap["objects"] == []


def test_provenance_names_the_loaded_weights(batch_out, model_dir):
    prov = json.loads(batch_out[C.provenance_column("caption")][0])
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


def test_sampled_retries_do_not_depend_on_batch_mates(stage):
    rows = batch(3, seed=1)
    requests = [stage._job({k: v[i] for k, v in rows.items()}).request for i in range(3)]
    sampling = Sampling(temperature=0.9, max_new_tokens=160, seed=5)
    together = stage.backend.generate(requests, sampling)
    assert together[1] == stage.backend.generate(requests[1:2], sampling)[0]
    assert together != stage.backend.generate(requests, Sampling(0.9, 160, seed=6))  # the seed matters
