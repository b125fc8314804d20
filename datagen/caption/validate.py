"""Turn a model's raw answer into a caption dict, or a groupable reason why not.

Reasons: `refusal`, `invalid_json`, `missing_fields`, `bad_field`, `box_out_of_range`.
Boxes come back in the model's coordinate frame (pixels of the image it saw, or 0-1000)
and leave here in pixels of frame A.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

from datagen.caption.schema import REQUIRED_FIELDS

# Phrases of a model declining the task; checked on free text and on the JSON's text fields.
REFUSAL = re.compile(r"\b(I('m| am) sorry|I can(no|')t|I cannot|unable to (help|assist|comply)|as an AI)\b", re.I)


@dataclass
class Verdict:
    caption: dict[str, Any] | None  # None when rejected
    reason: str = ""
    detail: str = ""


def parse_answer(raw: str, required: tuple[str, ...]) -> Verdict:
    """A model's raw answer as a JSON object holding `required` (in `caption`), or why not (any VLM stage)."""
    text = raw.strip()
    if text.startswith("```"):  # a fenced answer is still an answer
        text = re.sub(r"^```(json)?\s*|\s*```$", "", text)
    try:
        data = json.loads(text)
    except ValueError as e:
        if REFUSAL.search(text):
            return Verdict(None, "refusal", text[:300])
        return Verdict(None, "invalid_json", f"{e}: {text[:300]!r}")
    if not isinstance(data, dict):
        return Verdict(None, "invalid_json", f"expected a JSON object, got {type(data).__name__}")
    missing = [f for f in required if f not in data]
    if missing:
        return Verdict(None, "missing_fields", f"missing {', '.join(missing)}")
    return Verdict(data)


def check_caption(raw: str, schema: dict[str, Any], box_space: tuple[int, int], frame_size: tuple[int, int]) -> Verdict:
    """Validate `raw` against `schema` (boxes bounded by `box_space`), scale boxes to `frame_size`."""
    parsed = parse_answer(raw, REQUIRED_FIELDS)
    if parsed.caption is None:
        return parsed
    data = parsed.caption
    for field in ("caption_a", "caption_b", "instruction"):
        if isinstance(data[field], str) and REFUSAL.search(data[field]):
            return Verdict(None, "refusal", f"{field}: {data[field][:300]}")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = "/".join(map(str, error.absolute_path))
        reason = "box_out_of_range" if "box" in error.absolute_path else "bad_field"
        return Verdict(None, reason, f"{where}: {error.message}"[:300])
    mx, my = box_space
    width, height = frame_size
    objects = []
    for i, obj in enumerate(data["objects"]):
        x0, y0, x1, y1 = obj["box"]
        if not (x0 < x1 and y0 < y1):
            return Verdict(None, "box_out_of_range", f"objects/{i}/box: empty or inverted box {obj['box']}")
        box = [round(x0 * width / mx), round(y0 * height / my), round(x1 * width / mx), round(y1 * height / my)]
        objects.append({"name": obj["name"], "box": box})
    return Verdict({**data, "objects": objects})
