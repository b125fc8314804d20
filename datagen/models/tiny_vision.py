"""Randomly initialised SAM2 (video) and Depth Anything models built from configs.

No weights can be downloaded on the build machines, so tests, the demo and the GPU
benchmark build these, `save_pretrained` them, and the stages load them back through
the same `from_pretrained` call a user's hub id takes. "tiny" is for CPU tests;
"large" has the shapes of facebook/sam2.1-hiera-large and
depth-anything/Depth-Anything-V2-Large-hf (random weights: right cost, meaningless output).
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Sam2VideoConfig, Sam2VideoModel
from transformers.models.sam2_video.configuration_sam2_video import Sam2VideoMaskDecoderConfig, Sam2VideoPromptEncoderConfig


def _sam2_config(size: str) -> Sam2VideoConfig:
    if size == "large":  # facebook/sam2.1-hiera-large
        image_px, fpn, hiera = 1024, 256, dict(
            hidden_size=144, num_attention_heads=2, blocks_per_stage=[2, 6, 36, 4],
            embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
            window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43],
        )
        heads, mlp_dim, mem = 8, 2048, dict()
    elif size == "tiny":
        # FACTS.md: the video path needs fpn_hidden_size a multiple of 64 and > 64, memory
        # encoder/fuser/downsampler dims equal to it, and no global block first in a stage.
        image_px, fpn, hiera = 128, 128, dict(
            hidden_size=16, num_attention_heads=1, blocks_per_stage=[1, 1, 2, 1],
            embed_dim_per_stage=[16, 32, 64, 128], num_attention_heads_per_stage=[1, 1, 2, 2],
            window_size_per_stage=[8, 4, 4, 4], global_attention_blocks=[3],
        )
        heads, mlp_dim = 2, 64
        mem = dict(
            memory_attention_hidden_size=fpn, memory_attention_num_layers=1,
            memory_attention_feed_forward_hidden_size=64, memory_encoder_hidden_size=fpn,
            mask_downsampler_embed_dim=fpn, memory_fuser_embed_dim=fpn, memory_fuser_num_layers=1,
            memory_fuser_intermediate_dim=64,
        )
    else:
        raise ValueError(f"unknown model size {size!r}; use 'tiny' or 'large'")
    feat = [[image_px // s, image_px // s] for s in (4, 8, 16)]
    vision = dict(
        model_type="sam2_vision_model",
        backbone_config=dict(model_type="sam2_hiera_det_model", image_size=[image_px, image_px], **hiera),
        backbone_channel_list=list(reversed(hiera["embed_dim_per_stage"])),
        backbone_feature_sizes=feat, fpn_hidden_size=fpn,
    )
    return Sam2VideoConfig(
        vision_config=vision,
        # Config objects, not dicts: transformers 5.19 (the one vLLM 0.32 pins) builds a dict
        # mask_decoder_config as a prompt-encoder config (tests/stages run in both venvs).
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(hidden_size=fpn, image_size=image_px, patch_size=16),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(hidden_size=fpn, mlp_dim=mlp_dim, num_attention_heads=heads,
                                                       iou_head_hidden_dim=fpn),
        image_size=image_px, memory_attention_rope_feat_sizes=feat[-1], memory_encoder_output_channels=64, **mem,
    )


def _depth_config(size: str) -> DepthAnythingConfig:
    if size == "large":  # depth-anything/Depth-Anything-V2-Large-hf
        backbone = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, out_indices=[5, 12, 18, 24])
        neck = dict(reassemble_hidden_size=1024, neck_hidden_sizes=[256, 512, 1024, 1024], fusion_hidden_size=256)
    elif size == "tiny":
        backbone = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                        out_indices=[1, 2, 3, 4])
        neck = dict(reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8)
    else:
        raise ValueError(f"unknown model size {size!r}; use 'tiny' or 'large'")
    backbone.update(model_type="dinov2", image_size=518, patch_size=14, reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, depth_estimation_type="relative", **neck)


def build_sam2(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random Sam2VideoModel of `size` to `out_dir` and return the directory."""
    torch.manual_seed(seed)
    model = Sam2VideoModel(_sam2_config(size))
    with torch.no_grad():
        # Random weights put the object-presence logit near 0, so tracked masks would flip
        # between empty and not; a positive bias makes every prompted object "present".
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(5.0)
    model.save_pretrained(out_dir)
    return Path(out_dir)


def build_depth_anything(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random DepthAnythingForDepthEstimation of `size` to `out_dir`."""
    torch.manual_seed(seed)
    DepthAnythingForDepthEstimation(_depth_config(size)).save_pretrained(out_dir)
    return Path(out_dir)


def build_tiny_sam2(out_dir: str | Path) -> Path:
    return build_sam2(out_dir, "tiny")


def build_tiny_depth_anything(out_dir: str | Path) -> Path:
    return build_depth_anything(out_dir, "tiny")
