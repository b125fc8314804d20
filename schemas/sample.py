"""The sample record: what `{key}.json` holds, as typed dataclasses.

Bump SCHEMA_VERSION whenever the JSON format changes; `schemas/sample.schema.json` is
exported from these classes (`python -m schemas.export`) and a test pins it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from schemas.tasks import ImageKind, Role

SCHEMA_VERSION = 1


@dataclass(slots=True)
class Provenance:
    """Where a label came from: enough to decide later whether it is stale."""

    model_id: str  # hub id or path the stage loaded (or an algorithm name, e.g. "opencv-canny")
    revision: str = ""  # hub revision, or a content hash of local weights
    params: dict[str, Any] = field(default_factory=dict)  # parameters that change the output

    def fingerprint(self) -> str:
        return json.dumps([self.model_id, self.revision, self.params], sort_keys=True)


@dataclass(slots=True)
class ImageRef:
    member: str  # member suffix inside the sample, e.g. "in0.jpg"
    role: Role
    kind: ImageKind
    width: int
    height: int
    label: str = ""  # e.g. the object name of an asset


@dataclass(slots=True)
class Prompt:
    """UniReal's hierarchical prompt."""

    base: str  # the instruction or caption
    context: str  # what kind of data and task this is, from measured facts only
    images: list[ImageRef]  # ordered inputs, each with its role


@dataclass(slots=True)
class Source:
    video_uri: str
    video_id: str
    shot: int
    pair: int
    frame_a: int
    frame_b: int
    t_a_s: float
    t_b_s: float


@dataclass(slots=True)
class SampleRecord:
    key: str
    task_id: int
    task: str
    prompt: Prompt
    target: ImageRef
    source: Source
    labels: dict[str, Provenance]  # stage name -> provenance of the label it produced
    facts: dict[str, Any] = field(default_factory=dict)  # measured facts of the pair
    schema_version: int = SCHEMA_VERSION
    # The judge's verdict on the pair (score 1-5, plausible, failing_parts) when verify ran;
    # optional, so datasets written before the verify stage still read and validate.
    verify: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data. Written out by hand: `dataclasses.asdict` deep-copies and
        dominated the shard writer's profile."""
        p, s = self.prompt, self.source
        d = {
            "key": self.key, "task_id": self.task_id, "task": self.task,
            "prompt": {"base": p.base, "context": p.context, "images": [_ref(i) for i in p.images]},
            "target": _ref(self.target),
            "source": {"video_uri": s.video_uri, "video_id": s.video_id, "shot": s.shot, "pair": s.pair,
                       "frame_a": s.frame_a, "frame_b": s.frame_b, "t_a_s": s.t_a_s, "t_b_s": s.t_b_s},
            "labels": {k: {"model_id": v.model_id, "revision": v.revision, "params": _jsonable(v.params)}
                       for k, v in self.labels.items()},
            "facts": _jsonable(self.facts),
            "schema_version": self.schema_version,
        }
        if self.verify:
            d["verify"] = _jsonable(self.verify)
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> "SampleRecord":
        d = json.loads(data) if isinstance(data, (bytes, str)) else data
        p, src = d["prompt"], d["source"]
        return cls(
            d["key"], d["task_id"], d["task"],
            Prompt(p["base"], p["context"], [_ref_from(i) for i in p["images"]]),
            _ref_from(d["target"]),
            Source(src["video_uri"], src["video_id"], src["shot"], src["pair"], src["frame_a"], src["frame_b"],
                   src["t_a_s"], src["t_b_s"]),
            {k: Provenance(v["model_id"], v["revision"], v["params"]) for k, v in d["labels"].items()},
            d.get("facts", {}),
            d["schema_version"],
            d.get("verify") or {},
        )

    def members(self) -> list[str]:
        """Every member suffix this sample must have, `json` first."""
        return ["json", *(i.member for i in self.prompt.images), self.target.member]


def _ref(r: "ImageRef") -> dict[str, Any]:
    return {"member": r.member, "role": r.role.value, "kind": r.kind.value, "width": r.width,
            "height": r.height, "label": r.label}


_ROLES = {m.value: m for m in Role}
_KINDS = {m.value: m for m in ImageKind}


def _ref_from(r: dict[str, Any]) -> "ImageRef":
    return ImageRef(r["member"], _ROLES[r["role"]], _KINDS[r["kind"]], r["width"], r["height"], r.get("label", ""))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (Role, ImageKind)):
        return value.value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


@dataclass(slots=True)
class Sample:
    """A record with its media: what the shard writer takes and the reader yields."""

    record: SampleRecord
    media: dict[str, bytes]  # member suffix -> bytes, e.g. {"in0.jpg": b"...", "target.jpg": b"..."}

    @property
    def key(self) -> str:
        return self.record.key
