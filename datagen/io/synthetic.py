"""Synthetic but schema-true samples of every task, for tests and benchmarks."""
from __future__ import annotations

import numpy as np

from datagen.media import encode_image
from schemas.members import input_member, sample_key, target_member
from schemas.sample import ImageRef, Prompt, Provenance, Sample, SampleRecord, Source
from schemas.tasks import TASK_BY_ID, ImageKind, Role, input_slots


def random_image(rng: np.random.Generator, kind: ImageKind, width: int, height: int) -> np.ndarray:
    if kind is ImageKind.rgb:
        # smooth gradients + noise: compresses like a photo, unlike pure noise
        y, x = np.mgrid[0:height, 0:width]
        base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                         np.full_like(x, rng.integers(0, 256))], -1)
        return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    if kind is ImageKind.depth16:
        return rng.integers(0, 65536, (height, width), dtype=np.uint16)
    return (rng.random((height, width)) > 0.8).astype(np.uint8) * 255


def make_sample(task_id: int, video_id: str = "vid0", shot: int = 0, pair: int = 0, *, width: int = 64,
                height: int = 48, assets_per_sample: int = 2, seed: int = 0, video_uri: str = "") -> Sample:
    spec = TASK_BY_ID[task_id]
    rng = np.random.default_rng([seed, task_id, shot, pair])
    key = sample_key(video_id, shot, pair, task_id)
    media: dict[str, bytes] = {}
    refs = []
    for i, slot in enumerate(input_slots(spec, assets_per_sample)):
        m = input_member(i, slot.kind)
        media[m] = encode_image(random_image(rng, slot.kind, width, height), slot.kind)
        refs.append(ImageRef(m, slot.role, slot.kind, width, height, label="object" if slot.role is Role.asset else ""))
    tm = target_member(spec.target)
    media[tm] = encode_image(random_image(rng, spec.target, width, height), spec.target)
    record = SampleRecord(
        key=key, task_id=spec.id, task=spec.name,
        prompt=Prompt(base=f"{spec.name} sample {pair}", context="synthetic test data", images=refs),
        target=ImageRef(tm, Role.target, spec.target, width, height),
        source=Source(video_uri or f"file:///videos/{video_id}.mp4", video_id, shot, pair, 10 * pair, 10 * pair + 24,
                      pair * 0.4, pair * 0.4 + 1.0),
        labels={"synthetic": Provenance("datagen-synthetic", "0", {"seed": seed})},
        facts={"gap_s": 1.0},
    )
    return Sample(record, media)
