"""The task table of DESIGN.md as code. Ids are stable forever: never reuse or renumber."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(str, enum.Enum):
    """Role of an image in UniReal's image prompt."""

    canvas = "canvas"  # the scene to edit or generate into
    asset = "asset"  # an object to keep
    control = "control"  # a depth/edge/mask signal
    target = "target"  # what the model must produce


class ImageKind(str, enum.Enum):
    """How an image member is stored; decides extension, mode and dtype."""

    rgb = "rgb"  # 8-bit RGB, JPEG (PNG when configured lossless)
    depth16 = "depth16"  # 16-bit grayscale PNG, relative depth normalised to 0..65535
    edge = "edge"  # 8-bit grayscale PNG, 0 or 255
    mask = "mask"  # 8-bit grayscale PNG, 0 or 255


@dataclass(frozen=True, slots=True)
class Slot:
    role: Role
    kind: ImageKind


@dataclass(frozen=True, slots=True)
class TaskSpec:
    id: int
    name: str
    inputs: tuple[Slot, ...]  # in role order; asset slots repeat `assets_per_sample` times
    target: ImageKind
    base_prompt: str  # which text becomes the base prompt (documentation + assemble)
    repeat_assets: bool = False  # task 2: the asset slot is repeated N times


_C_RGB = Slot(Role.canvas, ImageKind.rgb)
_A_RGB = Slot(Role.asset, ImageKind.rgb)

TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(0, "text_to_image", (), ImageKind.rgb, "caption"),
    TaskSpec(1, "instruction_edit", (_C_RGB,), ImageKind.rgb, "instruction A->B"),
    TaskSpec(2, "multi_object_customization", (_A_RGB,), ImageKind.rgb,
             "caption of B naming the objects", repeat_assets=True),
    TaskSpec(3, "object_insertion", (_A_RGB, _C_RGB), ImageKind.rgb, "insert ..."),
    TaskSpec(4, "depth_to_image", (Slot(Role.control, ImageKind.depth16),), ImageKind.rgb, "caption of B"),
    TaskSpec(5, "edge_to_image", (Slot(Role.control, ImageKind.edge),), ImageKind.rgb, "caption of B"),
    TaskSpec(6, "depth_estimation", (_C_RGB,), ImageKind.depth16, "fixed"),
    TaskSpec(7, "edge_detection", (_C_RGB,), ImageKind.edge, "fixed"),
    TaskSpec(8, "referring_segmentation", (_C_RGB,), ImageKind.mask, "segment the ..."),
)

TASK_BY_ID: dict[int, TaskSpec] = {t.id: t for t in TASKS}
TASK_BY_NAME: dict[str, TaskSpec] = {t.name: t for t in TASKS}


def task(ref: int | str) -> TaskSpec:
    """Look a task up by id or name, with an error listing the valid ones."""
    table = TASK_BY_ID if isinstance(ref, int) else TASK_BY_NAME
    key = ref if isinstance(ref, int) else str(ref)
    if isinstance(ref, str) and ref.isdigit():
        table, key = TASK_BY_ID, int(ref)
    if key not in table:
        valid = ", ".join(f"{t.id}={t.name}" for t in TASKS)
        raise KeyError(f"unknown task {ref!r}; valid tasks: {valid}")
    return table[key]


def input_slots(spec: TaskSpec, assets_per_sample: int) -> tuple[Slot, ...]:
    """The concrete, ordered input slots of a task (asset slots expanded)."""
    if spec.repeat_assets:
        return tuple(s for s in spec.inputs for _ in range(assets_per_sample))
    return spec.inputs
