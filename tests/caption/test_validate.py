"""The caption validator: every malformed answer becomes a reason, boxes land in frame A's pixels."""
import json

import jsonschema
import pytest

from datagen.caption.schema import EDIT_TYPES, caption_schema, grammar_schema
from datagen.caption.validate import check_caption

GOOD = {
    "caption_a": "a man stands by a red car", "caption_b": "the man sits in the red car",
    "differences": ["the man moved into the car"], "instruction": "make the man get into the car",
    "edit_type": "move", "objects": [{"name": "man", "box": [10, 20, 50, 80]}, {"name": "car", "box": [0, 30, 112, 84]}],
}
SENT = (112, 84)  # the image the model saw
FRAME = (640, 480)  # frame A


def check(answer, box_space=SENT):
    raw = answer if isinstance(answer, str) else json.dumps(answer)
    return check_caption(raw, caption_schema(*box_space), box_space, FRAME)


def test_good_answer_is_kept_and_boxes_scaled_to_frame_pixels():
    v = check(GOOD)
    assert v.reason == "" and v.caption["instruction"] == GOOD["instruction"]
    assert v.caption["objects"][0]["box"] == [round(10 * 640 / 112), round(20 * 480 / 84), round(50 * 640 / 112), round(80 * 480 / 84)]
    assert v.caption["objects"][1]["box"] == [0, round(30 * 480 / 84), 640, round(84 * 480 / 84)]


def test_norm1000_boxes_scale_by_1000():
    answer = {**GOOD, "objects": [{"name": "man", "box": [0, 500, 1000, 1000]}]}
    assert check(answer, (1000, 1000)).caption["objects"][0]["box"] == [0, 240, 640, 480]


def test_fenced_json_is_accepted():
    assert check("```json\n" + json.dumps(GOOD) + "\n```").caption is not None


@pytest.mark.parametrize("raw, reason", [
    ('{"caption_a": "a man", "caption_b": ', "invalid_json"),
    ("not json at all", "invalid_json"),
    ("[1, 2, 3]", "invalid_json"),
    ("I'm sorry, but I can't help with that request.", "refusal"),
    (json.dumps({**GOOD, "instruction": "I cannot describe people in images."}), "refusal"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "instruction"}), "missing_fields"),
    (json.dumps({k: v for k, v in GOOD.items() if k not in ("objects", "caption_b")}), "missing_fields"),
    (json.dumps({**GOOD, "edit_type": "teleport"}), "bad_field"),
    (json.dumps({**GOOD, "caption_a": ""}), "bad_field"),
    (json.dumps({**GOOD, "instruction": 3}), "bad_field"),
    (json.dumps({**GOOD, "objects": [{"name": "man", "box": [10, 20, 113, 80]}]}), "box_out_of_range"),
    (json.dumps({**GOOD, "objects": [{"name": "man", "box": [-1, 20, 50, 80]}]}), "box_out_of_range"),
    (json.dumps({**GOOD, "objects": [{"name": "man", "box": [10, 20, 50]}]}), "box_out_of_range"),
    (json.dumps({**GOOD, "objects": [{"name": "man", "box": [50, 20, 10, 80]}]}), "box_out_of_range"),
    (json.dumps({**GOOD, "objects": [{"name": "man", "box": [10, 20, 10, 80]}]}), "box_out_of_range"),
])
def test_bad_answers_get_their_reason(raw, reason):
    v = check(raw)
    assert v.caption is None and v.reason == reason and v.detail


def test_grammar_schema_swaps_max_length_for_a_pattern_with_the_same_bounds():
    schema = caption_schema(64, 48, max_text_chars=20)
    safe = grammar_schema(schema)
    assert "maxLength" not in json.dumps(safe) and "maxLength" in json.dumps(schema)
    assert safe["properties"]["edit_type"]["enum"] == list(EDIT_TYPES)
    text = {"type": "object", "properties": {"s": safe["properties"]["caption_a"]}}
    jsonschema.validate({"s": "a" * 20}, text)
    for bad in ("", "a" * 21, 'say "hi"', "line\nbreak"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"s": bad}, text)
    assert list(safe["properties"]) == ["caption_a", "caption_b", "differences", "instruction", "edit_type", "objects"]


def test_default_bounds_compile_in_xgrammar():
    """xgrammar 0.2.8 aborts on repetition bounds above 128; the default 300-char captions
    must still compile (regression: every caption failed with backend_error)."""
    import json as _json
    import re

    import xgrammar as xgr

    from datagen.caption.schema import bounded_chars, caption_schema, grammar_schema
    from datagen.models.tiny_vlm import build_tokenizer

    tok = build_tokenizer()
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok)))
    compiler.compile_json_schema(_json.dumps(grammar_schema(caption_schema(640, 480))), any_whitespace=False)
    for lo, hi in [(0, 12), (1, 300), (130, 300)]:
        pattern = re.compile(f"^{bounded_chars(lo, hi)}$")
        assert all(bool(pattern.match("a" * k)) == (lo <= k <= hi) for k in range(0, 400))
