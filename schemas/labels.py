"""The labels and what depends on them: the one declaration `run`, `assemble` and `relabel` read.

A labelling stage writes its columns (and its provenance column). Another stage may read
part of an earlier label (segment prompts SAM2 with the caption's object names and boxes);
a task's members and prompts derive from some labels (TASK_LABELS). Re-running a label
therefore re-runs, per pair, every stage whose input from it changed, and rebuilds every
task that depends on a label that was re-run.
"""
from __future__ import annotations

import json
from typing import Any, Callable

from schemas import columns as C

LABEL_STAGES = ("caption", "verify", "segment", "depth", "edges")  # in pipeline order

# Columns each labelling stage writes, besides its provenance column.
LABEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "caption": (C.CAPTION,),
    "verify": (C.VERIFY,),
    "segment": (C.SEGMENTS, C.MASKS_A, C.MASKS_B),
    "depth": (C.DEPTH_A, C.DEPTH_B),
    "edges": (C.EDGES_A, C.EDGES_B),
}


def caption_objects(caption_json: Any) -> list[list[Any]]:
    """What segment reads from a caption: its objects' names and boxes, in order."""
    if not caption_json:
        return []
    caption = json.loads(caption_json) if isinstance(caption_json, (str, bytes)) else caption_json
    return [[o.get("name"), o.get("box")] for o in (caption.get("objects") or []) if isinstance(o, dict)]


# stage -> {earlier label: what of that label's columns the stage reads}. When that part
# of a pair's label changes, the stage is stale for the pair and re-runs on it.
STAGE_INPUTS: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "verify": {"caption": lambda row: row.get(C.CAPTION)},  # the judge scores the caption's instruction
    "segment": {"caption": lambda row: caption_objects(row.get(C.CAPTION))},
}

# Which labels each task's members and prompts derive from (its provenance).
TASK_LABELS: dict[str, tuple[str, ...]] = {
    "text_to_image": ("caption",), "instruction_edit": ("caption",),
    "multi_object_customization": ("caption", "segment"), "object_insertion": ("caption", "segment"),
    "depth_to_image": ("caption", "depth"), "edge_to_image": ("caption", "edges"),
    "depth_estimation": ("depth",), "edge_detection": ("edges",), "referring_segmentation": ("caption", "segment"),
}


def record_labels(task: str) -> tuple[str, ...]:
    """Labels a task's sample record carries: those it derives from, and the judge's verdict on its
    caption (the record's `verify`). A re-run of any of them rebuilds the sample and is listed in
    its `changed_labels`."""
    labels = TASK_LABELS[task]
    return (*labels, "verify") if "caption" in labels else labels


def dependents(stage: str) -> list[str]:
    """Stages that read part of `stage`'s label, directly or through another stage, in pipeline order."""
    out: set[str] = set()
    frontier = [stage]
    while frontier:
        s = frontier.pop()
        for d, inputs in STAGE_INPUTS.items():
            if s in inputs and d not in out:
                out.add(d)
                frontier.append(d)
    return [s for s in LABEL_STAGES if s in out]


def relabel_plan(requested: list[str]) -> list[str]:
    """The requested stages and every stage that may have to re-run after them, in pipeline order."""
    plan = set(requested)
    for s in requested:
        plan.update(dependents(s))
    return [s for s in LABEL_STAGES if s in plan]


def tasks_depending_on(stages: list[str]) -> list[str]:
    """Tasks whose samples a re-run of any of `stages` may change."""
    return [t for t in TASK_LABELS if set(record_labels(t)) & set(stages)]
