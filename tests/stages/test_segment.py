import json

import numpy as np
import pytest
from transformers import Sam2VideoModel

from datagen import UserError
from datagen.config import from_dict
from datagen.media import decode_image
from datagen.cutouts import mask_box
from datagen.vision.sam2_prompts import BadCaption, caption_objects
from schemas.columns import FAILED_REASON, FAILED_STAGE, MASKS_A, MASKS_B, SEGMENTS, provenance_column
from schemas.tasks import ImageKind
from stages.segment import SegmentConfig, SegmentStage
from tests.stages.vision_inputs import batch, pair_row, tiny_sam2_dir  # noqa: F401 -- fixture

CAPTION = json.dumps({"caption_a": "a", "caption_b": "b", "instruction": "move it", "edit_type": "move", "objects": [
    {"name": "square", "box": [8, 8, 32, 32]},
    {"name": "speck", "box": [5, 5, 5.5, 30]},  # degenerate: dropped, id 1 never used
    {"name": "background", "box": [-10, 20, 70, 60]},  # clipped to the frame
]})


@pytest.fixture(scope="module")
def stage(tiny_sam2_dir):
    # Random weights: SAM's IoU estimates sit near 0.5, so the quality filters are opened here.
    cfg = from_dict(SegmentConfig, {"model": tiny_sam2_dir, "min_pred_iou": 0.0, "min_stability": 0.0,
                                    "min_area_frac": 0.0, "grid_points_per_side": 3, "max_objects": 3})
    return SegmentStage(cfg)


def _masks(pngs):
    return [decode_image(p, ImageKind.mask) for p in pngs]


def test_masks_binary_frame_size_one_per_object_with_consistent_ids(stage):
    out = stage(batch([pair_row(64, 48, caption=CAPTION)]))
    assert out[FAILED_STAGE] == [None]
    segments = json.loads(out[SEGMENTS][0])
    assert [s["object_id"] for s in segments] == [0, 2]  # caption indices of the usable boxes, in order
    assert [s["name"] for s in segments] == ["square", "background"]
    masks_a, masks_b = _masks(out[MASKS_A][0]), _masks(out[MASKS_B][0])
    assert len(masks_a) == len(masks_b) == len(segments)
    for s, ma, mb in zip(segments, masks_a, masks_b):
        for m in (ma, mb):
            assert m.shape == (48, 64) and m.dtype == np.uint8
            assert set(np.unique(m)) <= {0, 255}
        assert s["area_a"] == int((ma > 0).sum()) and s["area_b"] == int((mb > 0).sum())
        assert s["box_a"] == mask_box(ma > 0) and s["box_b"] == mask_box(mb > 0)
        assert s["visible_b"] == (s["area_b"] > 0)  # the tiny model always reports objects present
        assert 0.0 <= s["score"] <= 1.5


def test_grid_fallback_without_caption_objects(stage):
    empty = json.dumps({"objects": []})
    out = stage(batch([pair_row(caption=None), pair_row(caption=empty)]))
    assert out[FAILED_STAGE] == [None, None]
    for seg_json in out[SEGMENTS]:
        segments = json.loads(seg_json)
        assert 1 <= len(segments) <= 3  # max_objects
        assert [s["object_id"] for s in segments] == list(range(len(segments)))
        assert all(s["name"] is None for s in segments)  # nobody named them: no "segment the object" prompts
        scores = [s["score"] for s in segments]
        assert scores == sorted(scores, reverse=True)  # best predicted IoU first


def test_no_object_passing_the_filters_is_an_empty_list_not_a_failure(tiny_sam2_dir):
    """The pair still serves the tasks that need no object; assemble skips the others."""
    strict = SegmentStage(SegmentConfig(model=tiny_sam2_dir, min_pred_iou=1.01, grid_points_per_side=2))
    out = strict(batch([pair_row(caption=None)]))
    assert out[FAILED_STAGE] == [None]
    assert json.loads(out[SEGMENTS][0]) == [] and out[MASKS_A] == [[]] and out[MASKS_B] == [[]]
    assert out["provenance_segment"][0]


def test_bad_rows_are_marked_not_raised(stage):
    rows = [pair_row(caption=CAPTION), pair_row(caption="{not json"), pair_row(caption=CAPTION), pair_row()]
    rows[2]["image_b"] = b"\x89PNG broken"
    rows[3] = {**rows[3], FAILED_STAGE: "caption", FAILED_REASON: "bad_json", "failed_detail": "x"}
    out = stage(batch(rows))
    reasons = dict(zip(range(4), out[FAILED_REASON]))
    assert [reasons[i] for i in range(3)] == [None, "bad_caption", "bad_image"]
    assert out[FAILED_STAGE][3] == "caption" and out[SEGMENTS][3] is None  # earlier failure passes through


def test_batch_of_n_equals_n_single_calls(stage):
    rows = [pair_row(seed=s, caption=CAPTION if s % 2 else None) for s in range(3)]
    together = stage(batch(rows))
    for i, row in enumerate(rows):
        alone = stage(batch([row]))
        seg_t, seg_a = json.loads(together[SEGMENTS][i]), json.loads(alone[SEGMENTS][0])
        assert [s["object_id"] for s in seg_t] == [s["object_id"] for s in seg_a]
        assert [s["score"] for s in seg_t] == pytest.approx([s["score"] for s in seg_a], abs=1e-3)
        for col in (MASKS_A, MASKS_B):
            for mt, ma in zip(_masks(together[col][i]), _masks(alone[col][0])):
                assert (mt != ma).mean() < 0.002  # batched float math may flip a rare edge pixel


def test_provenance_names_model_weights_and_params(stage, tiny_sam2_dir):
    out = stage(batch([pair_row(caption=CAPTION)]))
    prov = json.loads(out[provenance_column("segment")][0])
    assert prov["model_id"] == tiny_sam2_dir
    assert prov["revision"].startswith("sha256:")
    assert prov["params"]["min_pred_iou"] == 0.0 and prov["params"]["input_px"] == 128


def test_model_is_loaded_once_per_stage_not_per_batch(tiny_sam2_dir, monkeypatch):
    calls = []
    original = Sam2VideoModel.from_pretrained.__func__
    monkeypatch.setattr(Sam2VideoModel, "from_pretrained",
                        classmethod(lambda cls, *a, **k: calls.append(a) or original(cls, *a, **k)))
    s = SegmentStage(SegmentConfig(model=tiny_sam2_dir, min_pred_iou=0, min_stability=0, min_area_frac=0))
    for _ in range(2):
        s(batch([pair_row(caption=CAPTION)]))
    assert len(calls) == 1


def test_bad_model_path_is_a_user_error_naming_the_key(tmp_path):
    with pytest.raises(UserError, match=r"segment\.model.*save_pretrained"):
        SegmentStage(SegmentConfig(model=str(tmp_path / "no-such-model")))


def test_caption_objects_clip_drop_and_reject():
    objs = caption_objects(CAPTION, 64, 48, max_objects=8)
    assert objs == [(0, "square", [8.0, 8.0, 32.0, 32.0]), (2, "background", [0.0, 20.0, 64.0, 48.0])]
    assert caption_objects(CAPTION, 64, 48, max_objects=1) == objs[:1]
    assert caption_objects(None, 64, 48, 8) == [] and caption_objects('{"objects": null}', 64, 48, 8) == []
    with pytest.raises(BadCaption):
        caption_objects("[1, 2", 64, 48, 8)


def test_runs_in_bfloat16_as_on_gpu(tiny_sam2_dir):
    bf16 = SegmentStage(SegmentConfig(model=tiny_sam2_dir, dtype="bfloat16", min_pred_iou=0, min_stability=0,
                                      min_area_frac=0, grid_points_per_side=2))
    out = bf16(batch([pair_row(caption=CAPTION)]))
    assert out[FAILED_STAGE] == [None] and len(out[MASKS_B][0]) == 2
    assert json.loads(out[provenance_column("segment")][0])["params"]["dtype"] == "torch.bfloat16"


def test_encoder_failure_marks_the_batch_instead_of_raising(stage, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")
    monkeypatch.setattr(stage.model, "get_image_features", out_of_memory)
    out = stage(batch([pair_row(caption=CAPTION), pair_row(seed=1)]))
    assert out[FAILED_REASON] == ["out_of_memory", "out_of_memory"]  # even alone: transient, the next run retries
    assert all("out of memory" in d for d in out["failed_detail"])

    def broken(*args, **kwargs):
        raise ValueError("weights do not match the config")
    monkeypatch.setattr(stage.model, "get_image_features", broken)
    out = stage(batch([pair_row(caption=CAPTION), pair_row(seed=1)]))
    assert out[FAILED_REASON] == ["model_error", "model_error"]
