"""assemble: one labelled pair -> the task samples of DESIGN.md's table, with hierarchical prompts.

Output: exactly ONE row per pair, holding all of its task samples in list columns
(`sample_keys`, `sample_records`, `sample_member_names`, `sample_member_data`, see
schemas/columns.py), what was made and what did not apply and why. Ray Data never
splits a row, so a pair's samples and its progress record reach the same write task:
that is what makes the commit exactly-once (datagen/pipeline/commit.py). Media bytes
from earlier stages are reused as they are; only cut-outs and blanked canvases are encoded.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datagen import UserError, task_shares
from datagen.cutouts import cut_out, remove_region
from datagen.media import decode_image, encode_image
from datagen.prompts import base_prompt, context_prompt
from schemas import columns as C
from schemas.labels import TASK_LABELS
from schemas.members import input_member, pair_key, sample_key, target_member
from schemas.sample import ImageRef, Prompt, Provenance, SampleRecord, Source
from schemas.tasks import TASK_BY_ID, TASK_BY_NAME, TASKS, ImageKind, Role, input_slots
from stages.base import Resources, Stage

NAMED_OBJECT_TASKS = ("object_insertion", "referring_segmentation")  # their prompt names the object


@dataclass
class AssembleConfig:
    # Share of pairs that yield each task (0 disables it); selection is a hash of the
    # key, so a re-run makes the same choice.
    tasks: dict[str, float] = field(default_factory=lambda: {t.name: 1.0 for t in TASKS})
    # Target share per task in the dataset (normalised; tasks left out are not limited); a task
    # over its share stops being written. Empty: no quotas. See datagen/task_shares.py.
    task_shares: dict[str, float] = field(default_factory=dict)
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
        for name, share in self.task_shares.items():
            if name not in TASK_BY_NAME or share < 0:
                raise UserError(f"config assemble.task_shares.{name}: a known task with a share >= 0 "
                                f"(tasks: {', '.join(TASK_BY_NAME)})")
        if self.task_shares and sum(self.task_shares.values()) <= 0:
            raise UserError("config assemble.task_shares: the shares must not all be 0")
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
        out = [self.assemble_pair(row) for row in rows]
        return self._apply_shares(out) if self.config.task_shares else out

    def _apply_shares(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop the samples of tasks over their share from their pair rows; those pairs record `over_share`."""
        task_of = lambda record: TASK_BY_ID[json.loads(record)["task_id"]].name  # noqa: E731
        candidates = [(k, task_of(rec)) for r in rows for k, rec in zip(r[C.SAMPLE_KEYS], r[C.SAMPLE_RECORDS])]
        keep = task_shares.select(candidates, self.config.task_shares)
        for r in rows:
            cols = (C.SAMPLE_KEYS, C.SAMPLE_RECORDS, C.SAMPLE_MEMBER_NAMES, C.SAMPLE_MEMBER_DATA)
            kept = [i for i, k in enumerate(r[C.SAMPLE_KEYS]) if k in keep]
            if len(kept) == len(r[C.SAMPLE_KEYS]):
                continue
            gone = {task_of(rec) for k, rec in zip(r[C.SAMPLE_KEYS], r[C.SAMPLE_RECORDS]) if k not in keep}
            for c in cols:
                r[c] = [r[c][i] for i in kept]
            r[C.MADE] = json.dumps([t for t in json.loads(r[C.MADE]) if t not in gone])
            r[C.SKIPPED] = json.dumps({**json.loads(r[C.SKIPPED]), **dict.fromkeys(gone, task_shares.OVER_SHARE)},
                                      sort_keys=True)
        return rows


    def assemble_pair(self, row: dict[str, Any]) -> dict[str, Any]:
        ctx = _PairContext(row, self.config)
        made, skipped, failures = [], {}, []
        keys, records, names, data = [], [], [], []
        for name, ratio in self.config.tasks.items():
            spec = TASK_BY_NAME[name]
            key = sample_key(row[C.VIDEO_ID], row[C.SHOT], row[C.PAIR], spec.id)
            if ratio <= 0 or not _chosen(key, ratio):
                continue
            try:
                built = ctx.build(name, key)
            except Exception as e:  # a broken label must not take the pair's other samples down
                failures.append({"key": key, "reason": "assemble_error", "detail": f"{name}: {type(e).__name__}: {e}"})
                continue
            if isinstance(built, str):
                skipped[name] = built
                continue
            record, media = built
            keys.append(key)
            records.append(record.to_json())
            names.append(list(media))
            data.append(list(media.values()))
            made.append(name)
        # the labelled pair itself rides along: the writer keeps it in the pair store
        return {**row, C.VIDEO_URI: row[C.VIDEO_URI], C.VIDEO_ID: row[C.VIDEO_ID],
                C.PAIR_KEY: pair_key(row[C.VIDEO_ID], row[C.SHOT], row[C.PAIR]),
                C.PAIRS_IN_VIDEO: row.get(C.PAIRS_IN_VIDEO), C.MADE: json.dumps(made),
                C.SKIPPED: json.dumps(skipped, sort_keys=True), C.SAMPLE_FAILURES: json.dumps(failures),
                C.SAMPLE_KEYS: keys, C.SAMPLE_RECORDS: records, C.SAMPLE_MEMBER_NAMES: names,
                C.SAMPLE_MEMBER_DATA: data}


class _PairContext:
    """Everything one pair offers to its task samples, decoded lazily and at most once."""

    def __init__(self, row: dict[str, Any], cfg: AssembleConfig):
        self.row, self.cfg = row, cfg
        self.facts = json.loads(row.get(C.FACTS) or "{}")
        self.caption = json.loads(row[C.CAPTION]) if row.get(C.CAPTION) else None
        self.verdict = json.loads(row[C.VERIFY]) if row.get(C.VERIFY) else {}  # the judge's, on the caption
        self.rgb_ext = _ext(row[C.IMAGE_A])
        self.size = (int(row[C.WIDTH]), int(row[C.HEIGHT]))
        self.labels = {}
        for stage in ("pairs", "caption", "verify", "segment", "depth", "edges"):
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
        judged = ("verify",) if "caption" in needs else ()  # the verdict is on the caption's instruction
        record = SampleRecord(
            key=key, task_id=spec.id, task=task,
            prompt=Prompt(base=base_prompt(task, self.caption or {}, names),
                          context=context_prompt(task, self.facts, self.moving_objects(), depth_model),
                          images=refs),
            target=ImageRef(tm, Role.target, spec.target, w, h),
            source=Source(r[C.VIDEO_URI], r[C.VIDEO_ID], int(r[C.SHOT]), int(r[C.PAIR]), int(r[C.FRAME_A]),
                          int(r[C.FRAME_B]), float(r[C.T_A_S]), float(r[C.T_B_S])),
            labels={s: self.labels[s] for s in ("pairs", *needs, *judged) if s in self.labels},
            facts=self.facts,
            verify=self.verdict if judged else {},
        )
        return record, media
