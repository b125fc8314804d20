"""JSON Schema of `{key}.json`, derived from the dataclasses in schemas.sample."""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any

from schemas import sample as S
from schemas.tasks import TASKS, ImageKind, Role

SCHEMA_FILE = Path(__file__).with_name("sample.schema.json")


def _type_schema(tp: Any) -> dict:
    origin = typing.get_origin(tp)
    if tp is str:
        return {"type": "string"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is Any:
        return {}
    if isinstance(tp, type) and issubclass(tp, (Role, ImageKind)):
        return {"enum": [m.value for m in tp]}
    if dataclasses.is_dataclass(tp):
        return {"$ref": f"#/$defs/{tp.__name__}"}
    if origin is list:
        return {"type": "array", "items": _type_schema(typing.get_args(tp)[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(typing.get_args(tp)[1])}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in typing.get_args(tp)]}
    raise TypeError(f"no JSON Schema mapping for {tp!r}")


def _object_schema(cls: type) -> dict:
    hints = typing.get_type_hints(cls)
    props, required = {}, []
    for f in dataclasses.fields(cls):
        props[f.name] = _type_schema(hints[f.name])
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def build_schema() -> dict:
    defs = {c.__name__: _object_schema(c) for c in (S.Provenance, S.ImageRef, S.Prompt, S.Source)}
    root = _object_schema(S.SampleRecord)
    root["properties"]["schema_version"] = {"const": S.SCHEMA_VERSION}
    root["properties"]["task_id"] = {"enum": [t.id for t in TASKS]}
    root["properties"]["task"] = {"enum": [t.name for t in TASKS]}
    root["properties"]["key"] = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}
    root["required"] = sorted(set(root["required"]) | {"schema_version", "facts"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://datagen/sample.schema.v{S.SCHEMA_VERSION}.json",
        "title": "datagen sample record",
        **root,
        "$defs": defs,
    }


def load_schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text())
