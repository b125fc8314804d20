"""Captioned frame pairs as verify-stage input (no pytest import: the vLLM engine probe uses it)."""
import json

from schemas import columns as C
from tests.caption.frames import batch


def captioned_batch(n: int, seed: int = 0) -> dict[str, list]:
    rows = batch(n, seed)
    rows[C.CAPTION] = [json.dumps({"caption_a": "a box", "caption_b": "a moved box", "differences": ["moved"],
                                   "instruction": f"move the box {i + 1} cm left", "edit_type": "move",
                                   "objects": []}) for i in range(n)]
    n_rows = len(rows[C.CAPTION])
    for col, value in ((C.VIDEO_ID, "vid"), (C.VIDEO_URI, "file:///v.mp4"), (C.SHOT, 0), (C.FRAME_A, 1),
                       (C.FRAME_B, 9), (C.T_A_S, 0.04), (C.T_B_S, 0.36)):
        rows[col] = [value] * n_rows
    rows[C.PAIR] = list(range(n_rows))
    return rows
