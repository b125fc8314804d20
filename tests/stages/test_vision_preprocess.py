import numpy as np
import torch

from datagen.vision import preprocess as pre
from datagen.vision.sam2_prompts import select_grid_masks


def test_sam2_pixels_square_resize_and_imagenet_normalisation():
    mean_rgb = np.round(pre.IMAGENET_MEAN * 255).astype(np.uint8)
    frame = np.broadcast_to(mean_rgb, (30, 50, 3)).copy()
    x = pre.sam2_pixels([frame, frame], 64)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    assert x.abs().max() < 0.01  # the mean colour normalises to ~0


def test_boxes_grid_and_mask_geometry():
    boxes = pre.boxes_to_model(np.array([[0, 0, 100, 50], [50, 25, 100, 50]]), width=100, height=50, size_px=1024)
    assert boxes.tolist() == [[0, 0, 1024, 1024], [512, 512, 1024, 1024]]
    assert pre.grid_points(2, 100).tolist() == [[25, 25], [75, 25], [25, 75], [75, 75]]
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    assert pre.mask_box(mask) == [2, 1, 5, 3] and pre.mask_box(np.zeros((4, 4), bool)) is None


def test_upsampled_logits_keep_the_region():
    logits = -torch.ones(1, 8, 8)
    logits[0, :4, :4] = 5.0  # top-left quarter
    up = pre.upsample_logits(logits, 40, 80) > 0
    assert up.shape == (1, 40, 80)
    # logits cross 0 five sixths of the way from the last positive cell centre to the next
    assert up[0, :19, :37].all() and not up[0, 22:, :].any() and not up[0, :, 43:].any()


def test_stability_and_nms_selection():
    sharp = torch.full((1, 8, 8), -10.0)
    sharp[0, 2:6, 2:6] = 10.0
    soft = sharp * 0.05  # same mask, logits within ±1 of the threshold: unstable
    assert pre.stability_scores(sharp, 0.0).item() == 1.0 and pre.stability_scores(soft, 0.0).item() == 0.0
    other = torch.full((1, 8, 8), -10.0)
    other[0, 6:, 6:] = 10.0
    logits = torch.cat([sharp, sharp, other, soft])
    iou = torch.tensor([0.9, 0.95, 0.8, 0.99])
    stab = pre.stability_scores(logits, 0.0)
    # 1 beats its duplicate 0; 3 fails stability; 2 is separate
    assert select_grid_masks(logits, iou, stab, 0.5, 0.5, 0.7, max_objects=8) == [1, 2]
    assert select_grid_masks(logits, iou, stab, 0.5, 0.5, 0.7, max_objects=1) == [1]
    assert select_grid_masks(logits, iou, stab, 0.96, 0.5, 0.7, max_objects=8) == []
