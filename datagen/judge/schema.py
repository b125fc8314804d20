"""The judge's answer as JSON Schema: one definition for the grammar, the server and the validator.

Key order is the generation order under constrained decoding: the model names what fails
first, then says whether B is plausible as an edit of A, and only then scores, so the
score follows from the reasons it just wrote (an early score would be a guess).
"""
from __future__ import annotations

from typing import Any

REQUIRED_FIELDS = ("failing_parts", "plausible", "score")
MIN_SCORE, MAX_SCORE = 1, 5


def judge_schema(max_text_chars: int = 120, max_failing_parts: int = 4) -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": list(REQUIRED_FIELDS),
        "properties": {
            "failing_parts": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": max_text_chars},
                              "maxItems": max_failing_parts},
            "plausible": {"type": "string", "enum": ["yes", "no"]},
            "score": {"type": "integer", "minimum": MIN_SCORE, "maximum": MAX_SCORE},
        },
    }
