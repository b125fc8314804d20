"""What the VLM is asked: OpenAI-style chat messages with frames A and B as base64 image parts.

All backends send the same messages (the local backend renders them with the model's chat
template), so a label does not depend on which backend produced it beyond the model itself.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image

from datagen.caption.schema import EDIT_TYPES

SYSTEM = "You label pairs of frames from real videos for training an image-editing model. You answer with JSON only."

USER = """The first image is frame A, the second is frame B, from the same video shot.{facts}
Both images are {width} x {height} pixels.
Answer with one JSON object, keys in this order:
"caption_a": one sentence describing frame A;
"caption_b": one sentence describing frame B;
"differences": the visible changes from A to B, most important first;
"instruction": one imperative instruction that turns A into B, about what changed (e.g. "make the man raise his left arm"), not a description of B;
"edit_type": one of {edit_types};
"objects": the salient objects of frame A, each {{"name": ..., "box": [x0, y0, x1, y1]}} {box_units}."""

BOX_UNITS = {
    "pixels": "in pixels of frame A (x from 0 to {width}, y from 0 to {height})",
    "norm1000": "on a 0-1000 scale of frame A's width and height",
}
# Changes whenever the wording changes, so provenance tells labels from different prompts apart.
PROMPT_VERSION = hashlib.sha256((SYSTEM + USER + json.dumps(BOX_UNITS)).encode()).hexdigest()[:12]


@dataclass
class SentImage:
    """A frame as sent to the model: JPEG bytes and their size (after the max-side resize)."""

    jpeg: bytes
    width_px: int
    height_px: int

    def data_url(self) -> str:
        return "data:image/jpeg;base64," + base64.b64encode(self.jpeg).decode("ascii")


def prepare_image(data: bytes, max_side_px: int, multiple_px: int = 1, quality: int = 90) -> SentImage:
    """Decode, shrink so the longer side is at most `max_side_px` (never enlarge), round both
    sides to a multiple of `multiple_px` (the model's patch grid), re-encode as JPEG."""
    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        scale = min(1.0, max_side_px / max(im.size))
        size = [max(multiple_px, round(side * scale / multiple_px) * multiple_px) for side in im.size]
        if tuple(size) != im.size:
            im = im.resize(tuple(size), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return SentImage(buf.getvalue(), im.width, im.height)


def facts_hint(facts_json: str | None) -> str:
    """Measured facts of the pair (time gap, camera motion, ...) as one line; scalars only."""
    try:
        facts = json.loads(facts_json) if facts_json else {}
    except (TypeError, ValueError):
        return ""
    if not isinstance(facts, dict):
        return ""
    items = [f"{k}: {v}" for k, v in sorted(facts.items()) if isinstance(v, (str, int, float, bool))]
    return ("\nMeasured facts about the pair: " + "; ".join(items) + ".") if items else ""


def build_messages(image_a: SentImage, image_b: SentImage, facts_json: str | None, box_units: str) -> list[dict[str, Any]]:
    text = USER.format(
        facts=facts_hint(facts_json), width=image_a.width_px, height=image_a.height_px,
        edit_types=", ".join(EDIT_TYPES),
        box_units=BOX_UNITS[box_units].format(width=image_a.width_px, height=image_a.height_px),
    )
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_a.data_url()}},
            {"type": "image_url", "image_url": {"url": image_b.data_url()}},
            {"type": "text", "text": text},
        ]},
    ]
