"""The verify stage with a tiny random Qwen2-VL through the transformers backend, loaded from disk."""
import json

import pytest

from datagen import UserError
from datagen.io.negatives import read_negatives
from datagen.io.shards import ShardLimits
from datagen.io.storage import Location
from datagen.io.tables import read_failures
from datagen.models.tiny_vlm import build_tiny_vlm
from datagen.pipeline.sink import write_rows
from schemas import columns as C
from stages.verify import VerifyConfig, VerifyStage
from tests.verify.frames import captioned_batch

N = 3


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


def config(model_dir, **kw) -> VerifyConfig:
    return VerifyConfig(**{"backend": "transformers", "model": model_dir, "device": "cpu", "max_image_side_px": 112,
                           "max_text_chars": 12, "max_failing_parts": 0, "max_new_tokens": 64, "max_retries": 1, **kw})
# No failing parts asked: a random model fills every string to its bound, one byte per token,
# and the verdict's other fields are what the stage acts on.


@pytest.fixture(scope="module")
def stage(model_dir):
    return VerifyStage(config(model_dir, min_score=1))


@pytest.fixture(scope="module")
def verdicts(stage):
    out = stage(captioned_batch(N))
    assert out[C.FAILED_REASON] == [None] * N, out[C.FAILED_DETAIL]  # min_score 1 keeps every judged pair
    return [json.loads(v) for v in out[C.VERIFY]]


def test_grammar_makes_a_random_judge_answer_a_valid_verdict(verdicts, stage, model_dir):
    for v in verdicts:
        assert sorted(v) == ["failing_parts", "plausible", "score"]
        assert 1 <= v["score"] <= 5 and isinstance(v["plausible"], bool) and v["failing_parts"] == []
    prov = json.loads(stage(captioned_batch(1))[C.provenance_column("verify")][0])
    assert prov["model_id"] == model_dir and prov["params"]["min_score"] == 1 and prov["revision"].startswith("sha256:")


def test_pairs_below_min_score_are_rejected_and_kept_as_negatives(model_dir, verdicts, tmp_path):
    scores = [v["score"] for v in verdicts]
    threshold = min(scores) + 1  # the lowest-scored pairs fall below it (the random judge says 1-4)
    assert threshold <= 5, scores
    out = VerifyStage(config(model_dir, min_score=threshold))(captioned_batch(N))
    for i, score in enumerate(scores):  # the same greedy verdicts, now judged against the threshold
        assert json.loads(out[C.VERIFY][i])["score"] == score
        assert out[C.FAILED_REASON][i] == ("instruction_mismatch" if score < threshold else None)
    rejected = [i for i, s in enumerate(scores) if s < threshold]
    assert all(f"< verify.min_score {threshold}" in out[C.FAILED_DETAIL][i] for i in rejected)

    loc = Location.parse(str(tmp_path / "ds"))
    rows = [{c: out[c][i] for c in out} for i in range(N) if out[C.FAILED_STAGE][i]]
    counts = write_rows(loc, rows, prefix="t-", limits=ShardLimits(10, 1 << 20))
    assert counts["failures"] == len(rejected)
    negatives = read_negatives(loc).to_pylist()
    assert sorted(n["pair"] for n in negatives) == rejected
    for n in negatives:
        assert n["score"] == scores[n["pair"]] < threshold
        assert n["instruction"] == f"move the box {n['pair'] + 1} cm left" and n["image_a"] and n["image_b"]
        assert json.loads(n["judge_json"])["params"]["min_score"] == threshold
    assert sorted(read_failures(loc).column("reason").to_pylist()) == ["instruction_mismatch"] * len(rejected)


def test_unparseable_judge_answers_are_retried_then_recorded(model_dir):
    # Without the grammar a random model writes noise: every attempt fails validation, the
    # stage records the reason with the attempt count, and the batch still comes back whole.
    stage = VerifyStage(config(model_dir, guided_decoding=False, max_new_tokens=12, max_retries=1))
    out = stage(captioned_batch(2))
    assert out[C.FAILED_STAGE] == ["verify"] * 2 and out[C.VERIFY] == [None, None]
    assert set(out[C.FAILED_REASON]) <= {"invalid_json", "refusal", "missing_fields", "bad_field"}
    assert all(d.startswith("after 2 attempts:") for d in out[C.FAILED_DETAIL])


def test_a_pair_without_instruction_is_bad_caption(stage):
    rows = captioned_batch(2)
    rows[C.CAPTION] = [None, json.dumps({"caption_a": "x"})]
    out = stage(rows)
    assert out[C.FAILED_REASON] == ["bad_caption", "bad_caption"]


def test_judge_needs_a_model(tmp_path):
    with pytest.raises(UserError, match="verify.model"):
        VerifyStage(VerifyConfig())
    with pytest.raises(UserError, match="verify.model .*cannot load"):  # errors name the judge's section
        VerifyStage(VerifyConfig(backend="transformers", model=str(tmp_path / "nothing-here")))
    with pytest.raises(ValueError, match="min_score"):
        VerifyConfig(min_score=6)
