"""Model sizes by name (DiT's `DiT_models` table): width, depth and heads of the transformer."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0  # DiT/ViT default
    patch: int = 2  # latent pixels per token side; DiT-XL/2 and SD3 use 2
    max_tasks: int = 32  # task-embedding rows: ids are stable forever, room for new tasks keeps checkpoints loadable
    max_text_tokens: int = 512  # learned text positions
    grad_checkpointing: bool = False  # recompute blocks in backward: ~30% slower, activations ~depth x smaller
    # filled from the frozen encoders at build time, stored in checkpoints for `datagen sample`
    latent_channels: int = 4
    text_dim: int = 768


def _preset(dim: int, depth: int, heads: int):
    return lambda **kw: ModelConfig(dim=dim, depth=depth, heads=heads, **kw)


# ~params (blocks only): tiny 0.1M, small 21M, base 85M, large 302M, xl 446M, 1b 906M
PRESETS = {
    "tiny": _preset(64, 2, 4),  # tests and CPU smoke runs
    "small": _preset(384, 12, 6),
    "base": _preset(768, 12, 12),
    "large": _preset(1024, 24, 16),
    "xl": _preset(1152, 28, 16),  # DiT-XL width/depth
    "1b": _preset(1536, 32, 24),
}


def model_config(preset: str, **overrides) -> ModelConfig:
    from datagen import UserError

    if preset not in PRESETS:
        raise UserError(f"unknown model preset {preset!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[preset](**overrides)
