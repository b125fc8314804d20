"""Tiny random text encoder and VAE for tests and CPU smoke runs, saved like real weights.

They load through exactly the code path a hub id takes (`from_pretrained`).
"""
from __future__ import annotations

from pathlib import Path

_CORPUS = [
    "a photo of a cat on a red sofa", "make the sky darker", "insert the dog next to the tree",
    "real video frames; target is the same shot 1.2 s later; camera pans", "segment the person",
    "estimate depth", "detect edges", "synthetic test data", "text_to_image instruction_edit sample",
]


def build_tiny_text_encoder(out_dir: str | Path, **t5_shape) -> str:
    """A T5 encoder (1 layer unless `t5_shape` overrides the config) with a Unigram + Metaspace tokenizer
    trained offline on a few strings; random weights, saved in bf16 when large."""
    import torch

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    out = Path(out_dir)
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(_CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    shape = {"vocab_size": len(fast), "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 1, "num_heads": 4, **t5_shape}
    model = T5EncoderModel(T5Config(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, **shape))
    if sum(p.numel() for p in model.parameters()) > 50_000_000:
        model = model.to(torch.bfloat16)  # halves the bytes written for real-shaped benchmark encoders
    model.save_pretrained(out)
    return str(out)


def build_tiny_vae(out_dir: str | Path, **vae_shape) -> str:
    """An AutoencoderKL (4x downsampling, 4 latent channels unless `vae_shape` overrides), scaled to
    unit-variance latents.

    The scaling factor is measured as SD's was (1 / std of latents), so the flow-matching problem has the
    same signal-to-noise profile as with a real VAE.
    """
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    shape = {"latent_channels": 4, "block_out_channels": (8, 8, 16), "down_block_types": ("DownEncoderBlock2D",) * 3,
             "up_block_types": ("UpDecoderBlock2D",) * 3, "layers_per_block": 1, "norm_num_groups": 8, **vae_shape}
    vae = AutoencoderKL(in_channels=3, out_channels=3, sample_size=32, **shape)
    ramp = torch.linspace(-1, 1, 32)
    images = torch.stack([torch.stack([ramp[None].expand(32, 32) * s, ramp[:, None].expand(32, 32) * s,
                                       torch.full((32, 32), s)]) for s in torch.linspace(-1, 1, 8)])
    with torch.no_grad():
        std = float(vae.encode(images).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(out_dir)
    return str(out_dir)


def ensure_tiny_encoders(text_encoder: str, vae: str) -> list[str]:
    """Build the tiny encoders at the paths a smoke config names, where nothing is there yet.

    Returns the paths built (empty when both existed). Only for configs that set `model.tiny_encoders`:
    a mistyped path to real weights must stay an error, not become random weights.
    """
    from transformers.utils import logging as hf_logging

    built = []
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the caller's one line says what was built; no save_pretrained bars
    try:
        if not Path(text_encoder).exists():
            built.append(build_tiny_text_encoder(text_encoder))
        if not Path(vae).exists():
            built.append(build_tiny_vae(vae))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return built
