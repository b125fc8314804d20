"""What the vision label stages share: decoding a row's frame pair and writing provenance."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Iterator

import numpy as np

from datagen.media import decode_image
from schemas.columns import HEIGHT, IMAGE_A, IMAGE_B, WIDTH
from schemas.sample import Provenance
from stages.base import fail


class BadImage(ValueError):
    """A row whose frames cannot be decoded or do not match its declared size."""


def decode_pair(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Frames A and B of a row as HxWx3 uint8, checked against the row's WIDTH/HEIGHT."""
    frames = []
    for col in (IMAGE_A, IMAGE_B):
        data = row.get(col)
        if not data:
            raise BadImage(f"{col} is empty")
        try:
            frames.append(decode_image(data))
        except Exception as e:  # noqa: BLE001 -- PIL raises many types for corrupt bytes
            raise BadImage(f"{col} does not decode: {e}") from None
    a, b = frames
    want = (row.get(HEIGHT), row.get(WIDTH))
    for col, f in zip((IMAGE_A, IMAGE_B), frames):
        if None not in want and f.shape[:2] != tuple(want):
            raise BadImage(f"{col} is {f.shape[1]}x{f.shape[0]}, row says {want[1]}x{want[0]}")
    if a.shape != b.shape:
        raise BadImage(f"frames differ in size: {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}")
    return a, b


def decoded_pairs(rows: list[dict[str, Any]], stage: str) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """(row, frame A, frame B) for each row that decodes; the others are marked `bad_image`."""
    for row in rows:
        try:
            a, b = decode_pair(row)
        except BadImage as e:
            fail(row, stage, "bad_image", str(e))
            continue
        yield row, a, b


def provenance_json(model_id: str, revision: str, params: dict[str, Any]) -> str:
    return json.dumps(asdict(Provenance(model_id=model_id, revision=revision, params=params)), sort_keys=True)
