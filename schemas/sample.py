"""The sample record: what `{key}.json` holds, as typed dataclasses.

Bump SCHEMA_VERSION whenever the JSON format changes; `schemas/sample.schema.json` is
exported from these classes (`python -m schemas.export`) and a test pins it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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

    def to_json(self) -> bytes:
        return json.dumps(_jsonable(asdict(self)), sort_keys=True, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> "SampleRecord":
        d = json.loads(data) if isinstance(data, (bytes, str)) else data

        def ref(r: dict) -> ImageRef:
            return ImageRef(**{**r, "role": Role(r["role"]), "kind": ImageKind(r["kind"])})

        p = d["prompt"]
        return cls(
            key=d["key"],
            task_id=d["task_id"],
            task=d["task"],
            prompt=Prompt(base=p["base"], context=p["context"], images=[ref(i) for i in p["images"]]),
            target=ref(d["target"]),
            source=Source(**d["source"]),
            labels={k: Provenance(**v) for k, v in d["labels"].items()},
            facts=d.get("facts", {}),
            schema_version=d["schema_version"],
        )

    def members(self) -> list[str]:
        """Every member suffix this sample must have, `json` first."""
        return ["json", *(i.member for i in self.prompt.images), self.target.member]


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
