"""The `revision` of a model a stage loaded: hub commit, or a fingerprint of local weights."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_EDGE_BYTES = 1 << 20  # hash head and tail of each file: exact for small files, ~ms for a 15 GB checkpoint


def weights_revision(model: str, revision: str = "") -> str:
    """`revision` if given; for a local dir a content fingerprint; for a hub id the cached commit."""
    if revision:
        return revision
    path = Path(model)
    if path.is_dir():
        return "sha256:" + weights_fingerprint(path)
    return _hub_cache_commit(model) or "unknown"


def weights_fingerprint(directory: Path) -> str:
    """sha256 over each weight file's name, size, first and last MiB (whole file when small)."""
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.relative_to(directory)}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(_EDGE_BYTES))
            if size > 2 * _EDGE_BYTES:
                fh.seek(-_EDGE_BYTES, os.SEEK_END)
            h.update(fh.read(_EDGE_BYTES))
    return h.hexdigest()[:16]


def _hub_cache_commit(repo_id: str, ref: str = "main") -> str:
    """The commit the local Hugging Face cache resolves `ref` to (what from_pretrained loads offline)."""
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache/huggingface")) / "hub")
    ref_file = cache / f"models--{repo_id.replace('/', '--')}" / "refs" / ref
    return ref_file.read_text().strip() if ref_file.is_file() else ""
