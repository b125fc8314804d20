"""`datagen demo`: the whole pipeline on the bundled clips with the CPU profile.

The profile names real small checkpoints. Where one is not available offline (no
network, nothing in the Hugging Face cache), the demo says so in one line and uses a
tiny random checkpoint built locally, and marks the dataset "smoke" (stats.json and
the preview) so nobody mistakes its labels for real ones.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from datagen.pipeline.config import PipelineConfig, load_config

BUNDLED_VIDEOS = Path(__file__).resolve().parent.parent / "assets" / "videos"
TINY_CACHE = Path(os.environ.get("DATAGEN_CACHE", Path.home() / ".cache" / "datagen")) / "tiny-models"


def _tiny_builders() -> dict[str, tuple[str, Callable[[Path], object]]]:
    from datagen.models.tiny_vision import build_tiny_depth_anything, build_tiny_sam2
    from datagen.models.tiny_vlm import build_tiny_vlm

    # verify before caption: an unnamed judge resolves to the captioner's model, which the
    # caption entry then swaps for the tiny one (and the judge must get its smoke settings)
    return {"verify": ("qwen2-vl", build_tiny_vlm), "caption": ("qwen2-vl", build_tiny_vlm), "segment": ("sam2", build_tiny_sam2),
            "depth": ("depth-anything", build_tiny_depth_anything)}


def model_available(model: str) -> bool:
    """A local directory, or a hub id already in the local cache (nothing is downloaded)."""
    if Path(model).is_dir():
        return True
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(model, local_files_only=True)
        return True
    except Exception:  # not cached / offline: the caller falls back to a tiny model
        return False


def tiny_model(kind: str, build: Callable[[Path], object]) -> str:
    out = TINY_CACHE / kind
    if not (out / "config.json").exists():
        build(out)
    return str(out)


def demo_config(profile: str = "cpu", say: Callable[[str], None] = print) -> PipelineConfig:
    cfg = load_config(profile)
    for stage, (kind, build) in _tiny_builders().items():
        section = cfg.section(stage)
        if stage in cfg.labels and not model_available(section.model):
            say(f"{stage}: {section.model} is not available offline; using a tiny random {kind} (smoke dataset)")
            section = getattr(cfg, stage)  # the section itself (verify's may name no model of its own)
            section.model = tiny_model(kind, build)
            if stage == "caption":  # a random VLM fills every string to its bound and draws
                section.box_units = "pixels"  # inverted boxes: short strings, no objects (SAM2 then
                section.max_text_chars = 24  # falls back to its point grid), room for the JSON
                section.max_objects = 0
                section.max_new_tokens = 256
            if stage == "verify":  # a random judge's scores are noise: record them, reject none
                section.min_score = 1
                section.max_failing_parts = 0  # it fills every string to its bound
                section.max_new_tokens = 64
            if stage == "segment":  # a random SAM2's scores are noise: keep its grid masks
                section.min_pred_iou = section.min_stability = 0.0
            cfg.smoke = True
    return cfg


def demo_inputs(inputs: list[str]) -> list[str]:
    return list(inputs) or [str(BUNDLED_VIDEOS)]
