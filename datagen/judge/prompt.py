"""What the judge is asked: frames A and B and the caption's instruction, as OpenAI-style chat messages."""
from __future__ import annotations

import hashlib
from typing import Any

from datagen.caption.prompt import SentImage

SYSTEM = "You check training data for an image-editing model. You answer with JSON only."

USER = """The first image is frame A, the second is frame B, from the same video shot.
Instruction proposed for turning A into B: "{instruction}"
Answer with one JSON object, keys in this order:
"failing_parts": the parts of the instruction that B does not show, or changes B shows that the instruction misses (empty if none);
"plausible": "yes" if B is plausible as an edit of A (same scene, a change an editor could make), else "no";
"score": 1 to 5, how well the instruction turns A into B (5: exactly and completely, 3: partly, 1: not at all)."""

# Changes whenever the wording changes, so provenance tells verdicts from different prompts apart.
PROMPT_VERSION = hashlib.sha256((SYSTEM + USER).encode()).hexdigest()[:12]


def build_judge_messages(image_a: SentImage, image_b: SentImage, instruction: str) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_a.data_url()}},
            {"type": "image_url", "image_url": {"url": image_b.data_url()}},
            {"type": "text", "text": USER.format(instruction=instruction.replace('"', "'"))},
        ]},
    ]
