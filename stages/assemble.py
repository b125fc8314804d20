"""assemble: one labelled pair -> the task samples of DESIGN.md's table, with hierarchical prompts.

Output rows are of two kinds (column `row_kind`): one "pair" row per pair (what was made,
what was not applicable and why: the run's progress record) and one "sample" row per
task sample (`key`, `record_json`, `member_names`, `member_data`). Media bytes from
earlier stages are reused as they are; only cut-outs and blanked canvases are encoded.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datagen import UserError
from datagen.cutouts import cut_out, remove_region
from datagen.media import decode_image, encode_image
from datagen.prompts import base_prompt, context_prompt
from schemas import columns as C
from schemas.members import input_member, pair_key, sample_key, target_member
from schemas.sample import ImageRef, Prompt, Provenance, SampleRecord, Source
from schemas.tasks import TASK_BY_NAME, TASKS, ImageKind, Role, input_slots
from stages.base import Resources, Stage

NAMED_OBJECT_TASKS = ("object_insertion", "referring_segmentation")  # their prompt names the object
# Which labelling stages each task's members and prompts depend on (its provenance).
TASK_LABELS = {
    "text_to_image": ("caption",), "instruction_edit": ("caption",),
    "multi_object_customization": ("caption", "segment"), "object_insertion": ("caption", "segment"),
    "depth_to_image": ("caption", "depth"), "edge_to_image": ("caption", "edges"),
    "depth_estimation": ("depth",), "edge_detection": ("edges",), "referring_segmentation": ("caption", "segment"),
}


@dataclass
class AssembleConfig:
    # Share of pairs that yield each task (0 disables it); selection is a hash of the
    # key, so a re-run makes the same choice.
    tasks: dict[str, float] = field(default_factory=lambda: {t.name: 1.0 for t in TASKS})
    assets_per_sample: int = 2  # fixed per dataset: HF datasets needs one member set per task directory
    min_object_area_frac: float = 0.01  # smaller SAM2 masks are mostly fragments
    max_object_area_frac: float = 0.6  # an "object" filling the frame is background
    moving_object_frac: float = 0.02  # box-centre shift (share of the frame diagonal) that counts as moving
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, batch_size=16))

    def __post_init__(self):
        for name, ratio in self.tasks.items():
            if name not in TASK_BY_NAME:
                raise UserError(f"config assemble.tasks: unknown task {name!r}; allowed: {', '.join(TASK_BY_NAME)}")
            if not 0.0 <= ratio <= 1.0:
                raise UserError(f"config assemble.tasks.{name}: ratio {ratio} must be within 0..1")
        if self.assets_per_sample < 1:
            raise UserError("config assemble.assets_per_sample must be >= 1")


def _chosen(key: str, ratio: float) -> bool:
    if ratio >= 1.0:
        return True
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")
    return h / 2**64 < ratio


def _ext(data: bytes) -> str:
    return "png" if data[:4] == b"\x89PNG" else "jpg"


class AssembleStage(Stage):
    name = "assemble"

    def __init__(self, config: AssembleConfig | None = None):
        self.config = config or AssembleConfig()

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            out += self.assemble_pair(row)
        return out

    def assemble_pair(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        pk = pair_key(row[C.VIDEO_ID], row[C.SHOT], row[C.PAIR])
        base = {C.VIDEO_URI: row[C.VIDEO_URI], C.VIDEO_ID: row[C.VIDEO_ID], "pair_key": pk,
                "pairs_in_video": row.get("pairs_in_video")}
        ctx = _PairContext(row, self.config)
        made, skipped, rows = [], {}, []
        for name, ratio in self.config.tasks.items():
            spec = TASK_BY_NAME[name]
            key = sample_key(row[C.VIDEO_ID], row[C.SHOT], row[C.PAIR], spec.id)
            if ratio <= 0 or not _chosen(key, ratio):
                continue
            try:
                built = ctx.build(name, key)
            except Exception as e:  # a broken label must not take the pair's other samples down
                rows.append({**base, "row_kind": "failure", "key": key, C.FAILED_STAGE: self.name,
                             C.FAILED_REASON: "assemble_error", C.FAILED_DETAIL: f"{name}: {type(e).__name__}: {e}"})
                continue
            if isinstance(built, str):
                skipped[name] = built
                continue
            record, media = built
            names = list(media)
            rows.append({**base, "row_kind": "sample", "key": key, "task_id": spec.id,
                         "record_json": record.to_json(), "member_names": names,
                         "member_data": [media[n] for n in names]})
            made.append(name)
        rows.insert(0, {**base, "row_kind": "pair", "made_json": json.dumps(made),
                        "skipped_json": json.dumps(skipped, sort_keys=True)})
        return rows


class _PairContext:
    """Everything one pair offers to its task samples, decoded lazily and at most once."""

    def __init__(self, row: dict[str, Any], cfg: AssembleConfig):
        self.row, self.cfg = row, cfg
        self.facts = json.loads(row.get(C.FACTS) or "{}")
        self.caption = json.loads(row[C.CAPTION]) if row.get(C.CAPTION) else None
        self.rgb_ext = _ext(row[C.IMAGE_A])
        self.size = (int(row[C.WIDTH]), int(row[C.HEIGHT]))
        self.labels = {}
        for stage in ("pairs", "caption", "segment", "depth", "edges"):
            raw = row.get(C.provenance_column(stage))
            if raw:
                self.labels[stage] = Provenance(**json.loads(raw))
        self._decoded: dict[str, np.ndarray] = {}
        self.objects = self._objects()

    def image(self, col: str) -> np.ndarray:
        if col not in self._decoded:
            self._decoded[col] = decode_image(self.row[col], ImageKind.rgb)
        return self._decoded[col]

    def _objects(self) -> list[dict[str, Any]]:
        segs = json.loads(self.row.get(C.SEGMENTS) or "[]")
        w, h = self.size
        keep = []
        for i, s in enumerate(segs):
            frac = s.get("area_a", 0) / float(w * h)
            if self.cfg.min_object_area_frac <= frac <= self.cfg.max_object_area_frac:
                keep.append({**s, "index": i})
        return sorted(keep, key=lambda s: (-s.get("area_a", 0), s["index"]))

    def moving_objects(self) -> int | None:
        if not self.objects:
            return None
        diag = float(np.hypot(*self.size))
        moved = 0
        for s in self.objects:
            a, b = s.get("box_a"), s.get("box_b")
            if a and b and s.get("visible_b"):
                shift = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
                moved += shift / diag >= self.cfg.moving_object_frac
        return moved

    def mask(self, which: str, obj: dict[str, Any]) -> np.ndarray:
        col = C.MASKS_A if which == "a" else C.MASKS_B
        return decode_image(self.row[col][obj["index"]], ImageKind.mask)

    def build(self, task: str, key: str) -> tuple[SampleRecord, dict[str, bytes]] | str:
        """The sample, or the reason it does not apply to this pair."""
        spec = TASK_BY_NAME[task]
        needs = TASK_LABELS[task]
        if "caption" in needs and self.caption is None:
            return "no_caption"
        for stage, col in (("depth", C.DEPTH_B), ("edges", C.EDGES_B)):
            if stage in needs and not self.row.get(col):
                return f"no_{stage}"
        w, h = self.size
        objs: list[dict[str, Any]] = []
        inputs: list[tuple[bytes, int, int, str]] = []  # (bytes, width, height, label)
        if task in ("multi_object_customization", "object_insertion", "referring_segmentation"):
            objs = [o for o in self.objects if o.get("visible_b") or task == "referring_segmentation"]
            want = self.cfg.assets_per_sample if task == "multi_object_customization" else 1
            if len(objs) < want:
                return "too_few_objects"
            if task in NAMED_OBJECT_TASKS:  # "segment the object" teaches nothing: SAM2's grid masks have no name
                objs = [o for o in objs if o.get("name")]
                if len(objs) < want:
                    return "no_named_object"
            objs = objs[:want]
        names = [o["name"] for o in objs if o.get("name")]

        if task == "text_to_image":
            target = self.row[C.IMAGE_A]
        elif task == "instruction_edit":
            inputs, target = [(self.row[C.IMAGE_A], w, h, "")], self.row[C.IMAGE_B]
        elif task in ("multi_object_customization", "object_insertion"):
            for o in objs:
                crop = cut_out(self.image(C.IMAGE_A), self.mask("a", o))
                if crop is None:
                    return "empty_mask"
                inputs.append((encode_image(crop, ImageKind.rgb, self.rgb_ext), crop.shape[1], crop.shape[0], o.get("name") or ""))
            if task == "object_insertion":
                canvas = remove_region(self.image(C.IMAGE_B), self.mask("b", objs[0]))
                inputs.append((encode_image(canvas, ImageKind.rgb, self.rgb_ext), w, h, ""))
            target = self.row[C.IMAGE_B]
        elif task == "depth_to_image":
            inputs, target = [(self.row[C.DEPTH_B], w, h, "")], self.row[C.IMAGE_B]
        elif task == "edge_to_image":
            inputs, target = [(self.row[C.EDGES_B], w, h, "")], self.row[C.IMAGE_B]
        elif task == "depth_estimation":
            inputs, target = [(self.row[C.IMAGE_A], w, h, "")], self.row[C.DEPTH_A]
        elif task == "edge_detection":
            inputs, target = [(self.row[C.IMAGE_A], w, h, "")], self.row[C.EDGES_A]
        else:  # referring_segmentation
            inputs, target = [(self.row[C.IMAGE_A], w, h, "")], self.row[C.MASKS_A][objs[0]["index"]]

        slots = input_slots(spec, self.cfg.assets_per_sample)
        media, refs = {}, []
        for i, (slot, (data, iw, ih, label)) in enumerate(zip(slots, inputs, strict=True)):
            m = input_member(i, slot.kind, self.rgb_ext)
            media[m] = data
            refs.append(ImageRef(m, slot.role, slot.kind, iw, ih, label))
        tm = target_member(spec.target, self.rgb_ext)
        media[tm] = target
        depth_model = self.labels["depth"].model_id if "depth" in self.labels else ""
        r = self.row
        record = SampleRecord(
            key=key, task_id=spec.id, task=task,
            prompt=Prompt(base=base_prompt(task, self.caption or {}, names),
                          context=context_prompt(task, self.facts, self.moving_objects(), depth_model),
                          images=refs),
            target=ImageRef(tm, Role.target, spec.target, w, h),
            source=Source(r[C.VIDEO_URI], r[C.VIDEO_ID], int(r[C.SHOT]), int(r[C.PAIR]), int(r[C.FRAME_A]),
                          int(r[C.FRAME_B]), float(r[C.T_A_S]), float(r[C.T_B_S])),
            labels={s: self.labels[s] for s in ("pairs", *needs) if s in self.labels},
            facts=self.facts,
        )
        return record, media
