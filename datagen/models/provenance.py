"""The `revision` of a model a stage loaded: hub commit, or a fingerprint of local weights."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def weights_revision(model: str, revision: str = "", loaded=None) -> str:
    """What `revision` a label's provenance records for the weights a stage loaded.

    A local directory: a hash of its weight files' contents (a fine-tune saved over the
    same path changes it). A hub id: the commit the loaded model came from, else the
    requested revision, else the commit the local cache resolves to.
    """
    path = Path(model)
    if path.is_dir():
        return "sha256:" + weights_fingerprint(path)
    commit = getattr(getattr(loaded, "config", None), "_commit_hash", None)
    return commit or revision or _hub_cache_commit(model) or "unknown"


def weights_fingerprint(directory: Path) -> str:
    """sha256 over every weight file's name and full contents: once per actor start, a
    few seconds for a multi-GB checkpoint; a partial hash could miss a merged fine-tune."""
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        h.update(f"{f.relative_to(directory)}:{f.stat().st_size}".encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _hub_cache_commit(repo_id: str, ref: str = "main") -> str:
    """The commit the local Hugging Face cache resolves `ref` to (what from_pretrained loads offline)."""
    cache = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache/huggingface")) / "hub")
    ref_file = cache / f"models--{repo_id.replace('/', '--')}" / "refs" / ref
    return ref_file.read_text().strip() if ref_file.is_file() else ""
