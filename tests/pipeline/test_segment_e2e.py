"""End to end with max_objects > 0: the caption's named boxes prompt SAM2, and the masks
become the referring-segmentation and customization samples that name those objects.

The VLM is a scripted OpenAI-compatible server (the vllm-server backend's real HTTP
path): a random tiny VLM cannot be made to answer valid boxes, and this test is about
what happens to the boxes after the caption stage, through Ray and the shards.
"""
from __future__ import annotations

import json

import pytest
import yaml

from datagen.config import from_dict
from datagen.io.reader import iter_samples
from datagen.pipeline.config import PipelineConfig
from datagen.pipeline.run import run_pipeline
from tests.caption.fake_openai import FakeOpenAI
from tests.pipeline.conftest import REAL_VIDEOS, tiny_config_dict

NAMES = ("red square", "blue ball")


def _sent_size(schema: dict) -> tuple[int, int]:
    """The sent frame's width and height: the bounds of the box coordinates in the schema."""
    box = schema["properties"]["objects"]["items"]["properties"]["box"]["prefixItems"]
    return box[0]["maximum"], box[1]["maximum"]


def _answer(body: dict, _n: int) -> tuple[int, str]:
    w, h = _sent_size(body["response_format"]["json_schema"]["schema"])
    return 200, json.dumps({
        "caption_a": "a red square and a blue ball", "caption_b": "the red square moved",
        "differences": ["the square moved"], "instruction": "move the red square", "edit_type": "move",
        "objects": [{"name": NAMES[0], "box": [w // 8, h // 8, w // 2, h // 2]},
                    {"name": NAMES[1], "box": [w // 2, h // 3, w - 2, h - 2]}],
    })


@pytest.mark.slow
def test_caption_boxes_prompt_sam2_and_name_the_object_samples(tmp_path, tiny_models):
    with FakeOpenAI(_answer, lambda body: "all") as server:
        cfg_dict = tiny_config_dict(
            tiny_models, labels=["caption", "segment"],
            caption={"backend": "vllm-server", "endpoints": [server.url], "model": "scripted", "max_objects": 2,
                     "max_text_chars": 60},
            segment={"max_objects": 2, "min_area_frac": 0.0},
            # random SAM2 weights: any non-empty mask is an object here
            assemble={"min_object_area_frac": 0.0, "max_object_area_frac": 1.0,
                      "tasks": {"referring_segmentation": 1.0, "multi_object_customization": 1.0}})
        cfg = from_dict(PipelineConfig, cfg_dict)
        out = tmp_path / "ds"
        summary = run_pipeline(cfg, REAL_VIDEOS[:1], str(out))
        import ray

        ray.shutdown()
    assert server.calls["all"] >= 1 and summary.stats["stages"]["segment"]["out"] >= 1
    samples = list(iter_samples(str(out)))
    referring = [s.record for s in samples if s.record.task == "referring_segmentation"]
    assert referring, yaml.safe_dump(summary.stats)
    assert {r.prompt.base for r in referring} <= {f"segment the {n}" for n in NAMES}
    for s in samples:
        if s.record.task == "multi_object_customization":
            assert [i.label for i in s.record.prompt.images] == list(NAMES)  # caption order, caption names
    assert all(r.labels["segment"].params["max_objects"] == 2 for r in referring)
