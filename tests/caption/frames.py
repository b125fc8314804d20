"""Small random frame pairs as caption-stage input batches (no pytest import: the vLLM probe uses it)."""
import json

import numpy as np

from datagen.media import encode_image
from schemas import columns as C


def batch(n: int, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        h, w = (96, 128) if i % 2 else (120, 160)  # mixed sizes in one batch
        a, b = (rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(2))
        rows.append({C.IMAGE_A: encode_image(a), C.IMAGE_B: encode_image(b), C.WIDTH: w, C.HEIGHT: h,
                     C.FACTS: json.dumps({"gap_s": 0.5 + i})})
    return {k: [r[k] for r in rows] for k in rows[0]}
