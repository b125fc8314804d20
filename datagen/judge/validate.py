"""Turn a judge's raw answer into a verdict dict, or a groupable reason why not.

Reasons are the caption's (`refusal`, `invalid_json`, `missing_fields`, `bad_field`), so
one table of reasons covers both VLM stages.
"""
from __future__ import annotations

from typing import Any

import jsonschema

from datagen.caption.validate import parse_answer
from datagen.judge.schema import REQUIRED_FIELDS


def check_verdict(raw: str, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str, str]:
    """(verdict, "", "") when `raw` is valid against `schema`, else (None, reason, detail)."""
    parsed = parse_answer(raw, REQUIRED_FIELDS)
    data = parsed.caption
    if data is None:
        return None, parsed.reason, parsed.detail
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is not None:
        where = "/".join(map(str, error.absolute_path))
        return None, "bad_field", f"{where}: {error.message}"[:300]
    return {"score": data["score"], "plausible": data["plausible"] == "yes", "failing_parts": data["failing_parts"]}, "", ""
