"""Hierarchical prompt text: `base` from the caption, `context` from measured facts only.

Nothing here invents content: every clause of a context prompt is backed by a number or
label the pipeline measured (time gap, camera-motion class, tracked objects) or by what
the task itself is.
"""
from __future__ import annotations

from typing import Any

CAMERA_PHRASES = {
    "static": "the camera is still",
    "pan_left": "the camera pans left",
    "pan_right": "the camera pans right",
    "tilt_up": "the camera tilts up",
    "tilt_down": "the camera tilts down",
    "zoom_in": "the camera zooms in",
    "zoom_out": "the camera zooms out",
    "rotate": "the camera rotates",
    "handheld": "the camera shakes",
    "complex": "the camera moves irregularly",  # no single camera model fits the flow
}
# Share of the frame moving against the camera model above which "objects move" is said;
# the pairs stage's own threshold for a pair that is not static (pairing.min_object_area).
OBJECT_MOTION_AREA = 0.01

FIXED_BASE = {
    "depth_estimation": "estimate the depth map of this image",
    "edge_detection": "detect the edges in this image",
}


def _names(names: list[str]) -> str:
    names = [n for n in names if n]
    if len(names) <= 1:
        return "".join(f"the {n}" for n in names)
    return ", ".join(f"the {n}" for n in names[:-1]) + f" and the {names[-1]}"


def base_prompt(task: str, caption: dict[str, Any], object_names: list[str] | None = None) -> str:
    names = object_names or []
    if task == "text_to_image":
        return caption["caption_a"]
    if task == "instruction_edit":
        return caption["instruction"]
    if task == "multi_object_customization":
        text = caption["caption_b"].rstrip()
        missing = [n for n in names if n.lower() not in text.lower()]
        return f"{text} It shows {_names(missing)}." if missing else text
    if task == "object_insertion":
        return f"insert {_names(names[:1])}"
    if task in ("depth_to_image", "edge_to_image"):
        return caption["caption_b"]
    if task == "referring_segmentation":
        return f"segment {_names(names[:1])}"
    return FIXED_BASE[task]


def motion_clauses(facts: dict[str, Any], n_objects_moving: int | None) -> list[str]:
    out = []
    cam = facts.get("camera_motion")
    if cam in CAMERA_PHRASES:
        out.append(CAMERA_PHRASES[cam])
    if n_objects_moving:
        out.append("one tracked object moves" if n_objects_moving == 1 else f"{n_objects_moving} tracked objects move")
    elif facts.get("object_motion_area", 0.0) >= OBJECT_MOTION_AREA:
        out.append("objects move")
    return out


def context_prompt(task: str, facts: dict[str, Any], n_objects_moving: int | None = None,
                   depth_model: str = "") -> str:
    gap = facts.get("gap_s")
    later = f"the target is the same shot {gap:.1f} s later" if isinstance(gap, (int, float)) else \
        "the target is a later frame of the same shot"
    motion = motion_clauses(facts, n_objects_moving)
    if task == "text_to_image":
        parts = ["a real video frame"]
    elif task == "instruction_edit":
        parts = ["real video frames", "the canvas is the earlier frame", later, *motion]
    elif task == "multi_object_customization":
        parts = ["real video frames", "the assets are objects cut out of an earlier frame", later, *motion]
    elif task == "object_insertion":
        parts = ["real video frames", "the asset is an object cut out of an earlier frame",
                 "the canvas is the target with that object's region blanked out", later]
    elif task == "depth_to_image":
        parts = ["a real video frame", f"the control is its relative depth map{' from ' + depth_model if depth_model else ''}"]
    elif task == "edge_to_image":
        parts = ["a real video frame", "the control is its Canny edge map"]
    elif task == "depth_estimation":
        parts = ["a real video frame", f"the target is its relative depth map{' from ' + depth_model if depth_model else ''}"]
    elif task == "edge_detection":
        parts = ["a real video frame", "the target is its Canny edge map"]
    elif task == "referring_segmentation":
        parts = ["a real video frame", "the target is the binary mask of the named object"]
    else:
        raise KeyError(task)
    return "; ".join(parts)
