"""Member-naming rules and deterministic, WebDataset-safe sample keys."""
from __future__ import annotations

import hashlib
import re

from schemas.tasks import ImageKind

# webdataset splits "key.ext" at the first "." of the basename, and treats "/" as
# a directory: keys hold neither, only [A-Za-z0-9_-].
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_ID_CHARS = 64  # keeps keys well under tar's 100-char ustar name field with members

EXTENSION = {ImageKind.rgb: "jpg", ImageKind.depth16: "png", ImageKind.edge: "png", ImageKind.mask: "png"}


def safe_id(raw: str) -> str:
    """Map any string (e.g. a hostile file name) to a safe, stable key component.

    Safe strings pass through unchanged; anything else is sanitised and suffixed with a
    short hash of the original so that two different names cannot collide.
    """
    if raw and len(raw) <= MAX_ID_CHARS and not _UNSAFE.search(raw) and not raw.startswith("-"):
        return raw
    digest = hashlib.sha1(raw.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = _UNSAFE.sub("-", raw).strip("-_")[: MAX_ID_CHARS - 11] or "x"
    return f"{stem}_{digest}"


def pair_key(video_id: str, shot: int, pair: int) -> str:
    """`{video_id}/{shot}/{pair}` mapped to a WebDataset-safe key: what resume tracks."""
    if min(shot, pair) < 0:
        raise ValueError(f"negative index in key: shot={shot} pair={pair}")
    return f"{safe_id(video_id)}_s{int(shot):04d}_p{int(pair):04d}"


def sample_key(video_id: str, shot: int, pair: int, task_id: int) -> str:
    """`{video_id}/{shot}/{pair}/{task}` mapped to a WebDataset-safe key."""
    if task_id < 0:
        raise ValueError(f"negative task id in key: {task_id}")
    return f"{pair_key(video_id, shot, pair)}_t{task_id:02d}"


def pair_of(key: str) -> str:
    """The pair key a sample key belongs to."""
    return key.rsplit("_t", 1)[0]


def input_member(index: int, kind: ImageKind, rgb_ext: str = "jpg") -> str:
    return f"in{index}.{rgb_ext if kind is ImageKind.rgb else EXTENSION[kind]}"


def target_member(kind: ImageKind, rgb_ext: str = "jpg") -> str:
    return f"target.{rgb_ext if kind is ImageKind.rgb else EXTENSION[kind]}"


JSON_MEMBER = "json"
