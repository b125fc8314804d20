"""The `revision` of a model a stage loaded: hub commit, or a fingerprint of local weights.

A run resolves it once, on the driver (`datagen.models.loading.preflight_model`), and
pins it in the stage config's `revision`: a hub id gets its commit (every actor then
loads that commit), a local directory `sha256:<fingerprint>` (actors record it without
reading the weights again; hub loaders never see it, see `hub_revision`).
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
FINGERPRINT_PREFIX = "sha256:"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def weights_revision(model: str, revision: str = "", loaded=None) -> str:
    """What `revision` a label's provenance records for the weights a stage loaded.

    A local directory: the fingerprint the run pinned, else the commit of the Hugging
    Face snapshot it is, else a hash of its weight files' contents (a fine-tune saved
    over the same path changes it). A hub id: the commit the loaded model came from,
    else the requested revision, else the commit the local cache resolves to.
    """
    path = Path(model)
    if path.is_dir():
        if revision.startswith(FINGERPRINT_PREFIX):
            return revision
        return snapshot_commit(path) or FINGERPRINT_PREFIX + weights_fingerprint(path)
    commit = getattr(getattr(loaded, "config", None), "_commit_hash", None)
    return commit or revision or _hub_cache_commit(model) or "unknown"


def hub_revision(revision: str) -> str | None:
    """The revision to hand `from_pretrained`/vLLM: a pinned local fingerprint is no hub ref."""
    return None if not revision or revision.startswith(FINGERPRINT_PREFIX) else revision


def snapshot_commit(directory: Path) -> str:
    """The commit of a Hugging Face cache snapshot (`.../snapshots/<commit>`), else ""."""
    for d in (directory.absolute(), directory.resolve()):  # the path given, or where its link points
        if d.parent.name == "snapshots" and _COMMIT.match(d.name):
            return d.name
    return ""


def weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def weights_fingerprint(directory: Path) -> str:
    """sha256 over every weight file's name and full contents: a partial hash could miss a
    merged fine-tune. Seconds to a minute for a multi-GB checkpoint, hence once per run."""
    h = hashlib.sha256()
    for f in weight_files(directory):
        h.update(f"{f.relative_to(directory)}:{f.stat().st_size}".encode())
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 24), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def hub_cache_dir() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache/huggingface")) / "hub")


def _hub_cache_commit(repo_id: str, ref: str = "main") -> str:
    """The commit the local Hugging Face cache resolves `ref` to (what from_pretrained loads offline)."""
    ref_file = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "refs" / ref
    return ref_file.read_text().strip() if ref_file.is_file() else ""
