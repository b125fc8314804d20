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


def make_labelled_pair_row(video_id: str = "vidA", shot: int = 0, pair: int = 0, *, width: int = 96,
                           height: int = 64, n_objects: int = 2, seed: int = 0) -> dict:
    """A pair row as it reaches assemble: frames, caption, SAM2 masks, depth, edges, provenance.

    Objects are squares that move right by 6 px between A and B; the camera is still.
    """
    import json

    from schemas import columns as C

    rng = np.random.default_rng([seed, shot, pair])
    a = random_image(rng, ImageKind.rgb, width, height)
    b = a.copy()
    segments, masks_a, masks_b, objects = [], [], [], []
    for i in range(n_objects):
        side = height // 4
        x0, y0 = 6 + i * (side + 8), 8 + i * 4
        box_a, box_b = [x0, y0, x0 + side, y0 + side], [x0 + 6, y0, x0 + 6 + side, y0 + side]
        ma, mb = np.zeros((height, width), np.uint8), np.zeros((height, width), np.uint8)
        ma[y0:y0 + side, x0:x0 + side] = 255
        mb[y0:y0 + side, x0 + 6:x0 + 6 + side] = 255
        color = rng.integers(0, 256, 3)
        a[ma > 0], b[mb > 0] = color, color
        masks_a.append(encode_image(ma, ImageKind.mask))
        masks_b.append(encode_image(mb, ImageKind.mask))
        name = ["red box", "blue cup", "green ball"][i % 3]
        objects.append({"name": name, "box": box_a})
        segments.append({"object_id": i, "name": name, "box_a": box_a, "box_b": box_b, "area_a": side * side,
                         "area_b": side * side, "score": 0.9, "visible_b": True})
    caption = {"caption_a": "two objects on a gradient", "caption_b": "the objects have moved right",
               "instruction": "move the objects to the right", "edit_type": "move", "objects": objects}

    def prov(model: str) -> str:
        return json.dumps({"model_id": model, "revision": "r1", "params": {}})

    return {
        C.VIDEO_URI: f"file:///videos/{video_id}.mp4", C.VIDEO_ID: video_id, C.SHOT: shot, C.PAIR: pair,
        C.FRAME_A: 10, C.FRAME_B: 40, C.T_A_S: 0.4, C.T_B_S: 1.6, C.WIDTH: width, C.HEIGHT: height,
        C.IMAGE_A: encode_image(a, ImageKind.rgb), C.IMAGE_B: encode_image(b, ImageKind.rgb),
        C.FACTS: json.dumps({"gap_s": 1.2, "camera_motion": "static"}),
        C.CAPTION: json.dumps(caption), C.SEGMENTS: json.dumps(segments), C.MASKS_A: masks_a, C.MASKS_B: masks_b,
        C.DEPTH_A: encode_image(random_image(rng, ImageKind.depth16, width, height), ImageKind.depth16),
        C.DEPTH_B: encode_image(random_image(rng, ImageKind.depth16, width, height), ImageKind.depth16),
        C.EDGES_A: encode_image(random_image(rng, ImageKind.edge, width, height), ImageKind.edge),
        C.EDGES_B: encode_image(random_image(rng, ImageKind.edge, width, height), ImageKind.edge),
        C.provenance_column("caption"): prov("tiny-vlm"), C.provenance_column("segment"): prov("tiny-sam2"),
        C.provenance_column("depth"): prov("tiny-depth"), C.provenance_column("edges"): prov("opencv-canny"),
        "pairs_in_video": 1,
        C.FAILED_STAGE: None, C.FAILED_REASON: None, C.FAILED_DETAIL: None,
    }


def photo_like_media(task_id: int, width: int = 160, height: int = 120, assets_per_sample: int = 2) -> dict[str, bytes]:
    """One sample's members with photo-like content (smooth texture, smooth depth, Canny
    edges), so encoded sizes and thumbnails weigh what real ones do."""
    import cv2

    from datagen.video.synthetic import texture

    spec = TASK_BY_ID[task_id]
    rgb = texture(height, width, seed=task_id)
    arrays = {ImageKind.rgb: rgb, ImageKind.edge: cv2.Canny(rgb, 80, 160),
              ImageKind.depth16: np.tile(np.linspace(0, 65535, width, dtype=np.uint16), (height, 1)),
              ImageKind.mask: (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) > 128).astype(np.uint8) * 255}
    media = {input_member(i, s.kind): encode_image(arrays[s.kind], s.kind)
             for i, s in enumerate(input_slots(spec, assets_per_sample))}
    media[target_member(spec.target)] = encode_image(arrays[spec.target], spec.target)
    return media


def write_many_samples(url: str, samples: int, width: int = 160, height: int = 120) -> None:
    """`samples` samples spread over every task and 97 videos; the media of one task are
    encoded once and shared (only keys and sources differ), so 10,000 take seconds."""
    import dataclasses

    from datagen.io.shards import DatasetWriter
    from schemas.tasks import TASKS

    with DatasetWriter(url) as w:
        for spec in TASKS:
            template = make_sample(spec.id, width=width, height=height).record
            media = photo_like_media(spec.id, width, height)
            for n in range(samples // len(TASKS) + (spec.id < samples % len(TASKS))):
                video, pair = f"vid{n % 97:03d}", n // 97
                source = dataclasses.replace(template.source, video_id=video, pair=pair)
                w.add(Sample(dataclasses.replace(template, key=sample_key(video, 0, pair, spec.id), source=source),
                             media))
