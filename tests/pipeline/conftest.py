"""Shared fixtures for pipeline runs: tiny random models saved to disk once per session,
and a fast CPU config that points every model stage at them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from datagen.config import to_dict
from datagen.pipeline.config import load_config
from datagen.pipeline.demo import BUNDLED_VIDEOS

REAL_VIDEOS = sorted(str(p) for p in BUNDLED_VIDEOS.iterdir() if p.suffix in (".avi", ".mp4"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    from datagen.models.tiny_vision import build_depth_anything, build_sam2, build_tiny_sam2
    from datagen.models.tiny_vlm import build_tiny_vlm

    root = tmp_path_factory.mktemp("tiny_models")
    return {"caption": str(build_tiny_vlm(root / "vlm")), "segment": str(build_tiny_sam2(root / "sam2")),
            "depth": str(build_depth_anything(root / "depth", seed=0)),
            "depth_v2": str(build_depth_anything(root / "depth_v2", seed=1)),  # the "new model" of relabel tests
            "caption_v2": str(build_tiny_vlm(root / "vlm_v2", seed=1)),
            "segment_v2": str(build_sam2(root / "sam2_v2", seed=1))}


def tiny_config_dict(models: dict[str, str], **sections) -> dict:
    """The CPU profile with tiny models, small frames and few pairs: a run takes seconds."""
    cfg = to_dict(load_config("cpu"))
    cfg["smoke"] = True
    cfg["caption"].update(model=models["caption"], box_units="pixels", max_text_chars=24, max_objects=0,
                          max_new_tokens=256, max_image_side_px=112)
    # the judge is the tiny captioner: its random scores are recorded, none rejected
    cfg["verify"].update(min_score=1, max_failing_parts=0, max_new_tokens=64, max_image_side_px=112)
    cfg["segment"].update(model=models["segment"], min_pred_iou=0.0, min_stability=0.0, max_objects=2)
    cfg["depth"].update(model=models["depth"])
    cfg["pairs"].update(short_side_px=128, max_long_side_px=256)
    cfg["pairs"]["pairing"].update(max_pairs_per_video=3)
    cfg["ray"].update(num_cpus=2)
    for name, values in sections.items():
        if isinstance(cfg[name], dict):
            cfg[name].update(values)
        else:
            cfg[name] = values
    return cfg


@pytest.fixture
def write_config(tmp_path, tiny_models):
    def make(**sections) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(tiny_config_dict(tiny_models, **sections)))
        return path

    return make


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, tiny_models):
    """One uninterrupted run over the shipped clips: the key set every other run must match."""
    from datagen.config import from_dict
    from datagen.pipeline.config import PipelineConfig
    from datagen.pipeline.run import run_pipeline

    out = tmp_path_factory.mktemp("reference") / "ds"
    cfg = from_dict(PipelineConfig, tiny_config_dict(tiny_models, write={"min_rows_per_write": 20}))
    summary = run_pipeline(cfg, REAL_VIDEOS, str(out))
    _shutdown_ray()
    return out, summary


def _shutdown_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()


def copy_videos(dst: Path, names=None) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    out = []
    for src in REAL_VIDEOS:
        if names is None or Path(src).name in names:
            shutil.copy(src, dst / Path(src).name)
            out.append(str(dst / Path(src).name))
    return out
