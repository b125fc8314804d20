"""The caption's JSON Schema, as code: one definition for the grammar, the server and the validator.

Key order is the generation order under constrained decoding: describe A, describe B,
list the differences, then one instruction (published pipelines found that asking for
the difference first gives better instructions), then the edit type and A's objects.
"""
from __future__ import annotations

import copy
from typing import Any

EDIT_TYPES = ("add", "remove", "move", "pose", "attribute", "viewpoint", "lighting", "background", "other")
REQUIRED_FIELDS = ("caption_a", "caption_b", "instruction", "edit_type", "objects")


def caption_schema(width_px: int, height_px: int, max_text_chars: int = 300, max_objects: int = 8) -> dict[str, Any]:
    """The validation schema for a frame A of `width_px` x `height_px` (boxes in its pixels)."""

    def text(n: int) -> dict:
        return {"type": "string", "minLength": 1, "maxLength": n}

    def coord(limit: int) -> dict:
        return {"type": "integer", "minimum": 0, "maximum": int(limit)}

    box = {
        "type": "array",
        "prefixItems": [coord(width_px), coord(height_px), coord(width_px), coord(height_px)],
        "items": False, "minItems": 4, "maxItems": 4,
    }
    obj = {
        "type": "object", "additionalProperties": False, "required": ["name", "box"],
        "properties": {"name": text(min(60, max_text_chars)), "box": box},
    }
    return {
        "type": "object", "additionalProperties": False,
        "required": [*REQUIRED_FIELDS[:2], "differences", *REQUIRED_FIELDS[2:]],
        "properties": {
            "caption_a": text(max_text_chars),
            "caption_b": text(max_text_chars),
            "differences": {"type": "array", "items": text(max_text_chars), "minItems": 1, "maxItems": 4},
            "instruction": text(max_text_chars),
            "edit_type": {"type": "string", "enum": list(EDIT_TYPES)},
            "objects": {"type": "array", "items": obj, "maxItems": max_objects},
        },
    }


_CHAR = "[ !#-\\[\\]-~]"  # printable ASCII without quote and backslash
XGRAMMAR_MAX_REPEAT = 128


def bounded_chars(lo: int, hi: int) -> str:
    """A regex for lo..hi of _CHAR, with no repetition bound above XGRAMMAR_MAX_REPEAT."""
    parts, need, left = [], lo, hi
    while left > 0 or need > 0:
        n = min(left, XGRAMMAR_MAX_REPEAT)
        m = min(need, n)
        parts.append(f"{_CHAR}{{{m},{n}}}")
        left, need = left - n, need - m
    return "".join(parts) or f"{_CHAR}{{0,0}}"


def grammar_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` made safe for xgrammar-backed decoding (local grammar and vLLM's guided JSON).

    xgrammar 0.2.8 lets raw control characters through a string bounded by `maxLength`
    (the output then fails `json.loads`); a `pattern` with the same bounds over printable
    ASCII without quote and backslash keeps strings valid (non-ASCII bytes let a model
    emit broken UTF-8). The validator still checks against the original schema.
    xgrammar 0.2.8 also aborts on a repetition bound above 128 ("per_rule_fsm_hashes"
    check), so longer bounds are written as a run of chunks of at most 128: same language.
    """
    out = copy.deepcopy(schema)

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string" and "maxLength" in node:
                lo, hi = node.pop("minLength", 0), node.pop("maxLength")
                node["pattern"] = "^" + bounded_chars(lo, hi) + "$"
            for v in node.values():
                fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)

    fix(out)
    return out
