"""Out of memory on a batch: split in halves down to single rows; batch by pixels; one huge
frame fails alone (transient `out_of_memory`), its neighbours are labelled."""
import numpy as np
import pytest
import torch

from datagen.config import from_dict
from datagen.media import decode_image
from schemas.columns import DEPTH_A, DEPTH_B, FAILED_REASON, SEGMENTS
from schemas.reasons import kind_of
from schemas.tasks import ImageKind
from stages.base import pixel_batches, split_on_oom
from stages.depth import DepthConfig, DepthStage
from tests.stages.vision_inputs import batch, pair_row, tiny_depth_dir, tiny_sam2_dir  # noqa: F401 -- fixtures


def oom_over(budget_px: int, calls: list):
    def run(items: list[int]) -> list[int]:
        calls.append(list(items))
        if sum(items) > budget_px:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [n * 10 for n in items]
    return run


def test_split_halves_until_each_part_fits_and_a_lone_misfit_gets_its_error():
    calls: list = []
    out = split_on_oom(oom_over(100, calls), [30, 30, 30, 30, 500, 30, 30, 30])
    assert out[:4] == [300] * 4 and out[5:] == [300] * 3
    assert isinstance(out[4], torch.OutOfMemoryError)
    assert [500] in calls and len(calls) <= 2 * 8  # halving: at most 2n - 1 calls


def test_other_errors_are_not_split():
    calls = []

    def broken(items):
        calls.append(items)
        raise ValueError("bad weights")

    with pytest.raises(ValueError):
        split_on_oom(broken, [1, 2, 3, 4])
    assert len(calls) == 1


def test_batches_are_bounded_by_pixels_and_rows():
    assert pixel_batches([10, 10, 10, 50, 10], 30, 8) == [[0, 1, 2], [3], [4]]
    assert pixel_batches([1] * 5, 100, 2) == [[0, 1], [2, 3], [4]]


def test_one_huge_frame_does_not_fail_its_31_neighbours(tiny_depth_dir, monkeypatch):
    stage = DepthStage(from_dict(DepthConfig, {"model": tiny_depth_dir, "input_px": 70, "max_batch_pixels": 10**9}))
    rows = [pair_row(64, 48, seed=s) for s in range(31)] + [pair_row(1400, 100, seed=99)]  # a panorama: 70x980 input
    reference = stage(batch(rows[:31]))  # the neighbours when memory is plenty
    real_forward = stage.model.forward
    calls = []

    def small_gpu(*, pixel_values, **kw):
        calls.append(pixel_values.shape[0])
        if pixel_values.shape[0] * pixel_values.shape[2] * pixel_values.shape[3] > 20_000:  # ~5 small frames
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.20 GiB")
        return real_forward(pixel_values=pixel_values, **kw)

    monkeypatch.setattr(stage.model, "forward", small_gpu)
    out = stage(batch(rows))
    assert out[FAILED_REASON] == [None] * 31 + ["out_of_memory"]
    assert kind_of("out_of_memory") == "transient"  # the next run retries it, maybe on a bigger GPU
    assert max(calls) == 62 and min(calls) == 1  # first the whole group, then halves, the panorama alone
    for i in range(31):
        for col in (DEPTH_A, DEPTH_B):
            split = decode_image(out[col][i], ImageKind.depth16).astype(np.int64)
            whole = decode_image(reference[col][i], ImageKind.depth16).astype(np.int64)
            assert np.abs(split - whole).max() <= 64  # batched float math only


def test_segment_splits_its_image_encoder_batch_down_to_one_pair(tiny_sam2_dir, monkeypatch):
    from stages.segment import SegmentConfig, SegmentStage

    stage = SegmentStage(from_dict(SegmentConfig, {"model": tiny_sam2_dir, "min_pred_iou": 0.0, "min_stability": 0.0,
                                                   "min_area_frac": 0.0, "grid_points_per_side": 1}))
    rows = [pair_row(seed=s) for s in range(3)]
    reference = stage(batch(rows))
    real = stage.model.get_image_features
    frames_per_call = []

    def one_pair_fits(pixel_values, **kw):
        frames_per_call.append(pixel_values.shape[0])
        if pixel_values.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
        return real(pixel_values, **kw)

    monkeypatch.setattr(stage.model, "get_image_features", one_pair_fits)
    out = stage(batch(rows))
    assert out[FAILED_REASON] == [None] * 3
    assert frames_per_call == [6, 2, 4, 2, 2]  # 3 pairs, then 1 + 2, then the 2 alone
    assert out[SEGMENTS] == reference[SEGMENTS]
