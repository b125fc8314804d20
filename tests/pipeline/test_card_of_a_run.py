"""A run writes the dataset card, Hugging Face `datasets` loads each of its task directories by
name, and relabel writes the new version's card."""
from __future__ import annotations

import pytest
import yaml

from datagen.config import from_dict
from datagen.io.card import CARD_FILE
from datagen.pipeline.config import PipelineConfig
from datagen.pipeline.relabel import relabel
from tests.pipeline.conftest import tiny_config_dict

pytestmark = pytest.mark.slow


def meta(root) -> dict:
    return yaml.safe_load((root / CARD_FILE).read_text().split("---\n")[1])


def test_run_card_loads_every_task_with_hf_datasets(reference_run, tiny_models, tmp_path):
    datasets = pytest.importorskip("datasets")
    out, summary = reference_run
    card = meta(out)
    assert [c["config_name"] for c in card["configs"]] == list(summary.stats["tasks"])
    assert card["datagen"]["smoke"] is True and card["datagen"]["samples"] == summary.stats["samples"]
    assert f"| depth | {tiny_models['depth']} |" in (out / CARD_FILE).read_text()
    for task, n in summary.stats["tasks"].items():
        ds = datasets.load_dataset(str(out), task, split="train", cache_dir=str(tmp_path / "hf"))
        assert len(ds) == n and {r["json"]["task"] for r in ds} == {task}


def test_relabel_writes_the_new_versions_card(reference_run, tiny_models, tmp_path):
    src, _ = reference_run
    cfg = from_dict(PipelineConfig, tiny_config_dict(tiny_models, depth={"model": tiny_models["depth_v2"]}))
    relabel(str(src), str(tmp_path / "v2"), ["depth"], cfg)
    text = (tmp_path / "v2" / CARD_FILE).read_text()
    assert meta(tmp_path / "v2")["datagen"]["dataset_version"] == 2
    assert f"| depth | {tiny_models['depth_v2']} |" in text  # the relabelled samples' model
    assert f"| depth | {tiny_models['depth']} |" not in text  # every depth label was redone
