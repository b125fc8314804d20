"""Turn a judge's raw answer into a verdict dict, or a groupable reason why not.

Reasons are the caption's (`refusal`, `invalid_json`, `missing_fields`, `bad_field`), so
one table of reasons covers both VLM stages.
"""
from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from datagen.caption.validate import REFUSAL
from datagen.judge.schema import REQUIRED_FIELDS


def check_verdict(raw: str, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str, str]:
    """(verdict, "", "") when `raw` is valid against `schema`, else (None, reason, detail)."""
    text = raw.strip()
    if text.startswith("```"):  # a fenced answer is still an answer
        text = re.sub(r"^```(json)?\s*|\s*```$", "", text)
    try:
        data = json.loads(text)
    except ValueError as e:
        if REFUSAL.search(text):
            return None, "refusal", text[:300]
        return None, "invalid_json", f"{e}: {text[:300]!r}"
    if not isinstance(data, dict):
        return None, "invalid_json", f"expected a JSON object, got {type(data).__name__}"
    missing = [f for f in REQUIRED_FIELDS if f not in data]
    if missing:
        return None, "missing_fields", f"missing {', '.join(missing)}"
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = "/".join(map(str, error.absolute_path))
        return None, "bad_field", f"{where}: {error.message}"[:300]
    return {"score": data["score"], "plausible": data["plausible"] == "yes", "failing_parts": data["failing_parts"]}, "", ""
