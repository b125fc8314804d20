"""The frozen encoders: T5 for the prompts, a KL autoencoder for the frames (paths or hub ids)."""
from __future__ import annotations

import torch

from datagen import UserError


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load the tokenizer of text encoder {path!r}: {e}") from None


def encoder_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The encoders' compute dtype: bf16 on a GPU under bf16 training, else fp32 (the trainer and `datagen encode`
    share it, so pre-encoded inputs equal what a training step would compute)."""
    return torch.bfloat16 if precision == "bf16" and device.type == "cuda" else torch.float32


class FrozenEncoders:
    """Loads both once, frozen and in eval mode; encodes text tokens and images, decodes latents."""

    def __init__(self, text_encoder: str, vae: str, device: torch.device, dtype: torch.dtype, load_text: bool = True):
        """`load_text=False` (training on pre-encoded prompts) reads only the text encoder's config: its width."""
        from diffusers import AutoencoderKL
        from transformers import AutoConfig, T5EncoderModel

        try:
            if load_text:
                self.text = T5EncoderModel.from_pretrained(text_encoder, dtype=dtype)
                text_config = self.text.config
            else:
                self.text, text_config = None, AutoConfig.from_pretrained(text_encoder)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot load text encoder {text_encoder!r} (a T5 encoder path or hub id): {e}") from None
        try:
            self.vae = AutoencoderKL.from_pretrained(vae, torch_dtype=dtype, low_cpu_mem_usage=False)
        except (OSError, ValueError, EnvironmentError) as e:
            raise UserError(f"cannot load VAE {vae!r} (a diffusers AutoencoderKL path or hub id): {e}") from None
        for m in (self.text, self.vae):
            if m is not None:
                m.to(device).eval().requires_grad_(False)
        cfg = self.vae.config
        self.scale = float(cfg.scaling_factor)
        self.shift = float(getattr(cfg, "shift_factor", None) or 0.0)  # Flux/SD3 VAEs centre their latents
        self.down_px = 2 ** (len(cfg.block_out_channels) - 1)
        self.latent_channels = int(cfg.latent_channels)
        self.text_dim = int(text_config.d_model)
        self.device, self.dtype = device, dtype
        self._text_encoder = text_encoder
        self._null: dict[tuple[int, int], torch.Tensor] = {}

    def set_null_text(self, states: torch.Tensor, base_tokens: int, context_tokens: int) -> None:
        """Use stored empty-prompt states (a pre-encoded dataset's) instead of running the text encoder."""
        self._null[(base_tokens, context_tokens)] = states.to(self.device).float()

    def null_text(self, base_tokens: int, context_tokens: int) -> torch.Tensor:
        """[1, base+context, text_dim]: the empty prompt's states at fixed lengths, what a dropped prompt becomes
        when padding is attended (SD3 drops to the empty prompt's encoding too)."""
        key = (base_tokens, context_tokens)
        if key not in self._null:
            if self.text is None:
                raise UserError(f"no empty-prompt states for {key} prompt tokens, and the text encoder is not loaded")
            from datagen.train.data import tokenize

            tok = load_tokenizer(self._text_encoder)
            parts = [self.encode_text(*(t.to(self.device) for t in tokenize(tok, [""], n, fixed=True)))
                     for n in key]
            self._null[key] = torch.cat(parts, 1).float()
        return self._null[key]

    @torch.no_grad()
    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text(input_ids=ids, attention_mask=mask).last_hidden_state

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N,3,H,W] in [-1,1] -> normalised latents [N,C,H/down,W/down] (the posterior mean: deterministic)."""
        dist = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        return ((dist.mean - self.shift) * self.scale).float()

    @torch.no_grad()
    def decode_images(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, self.dtype) / self.scale + self.shift
        return self.vae.decode(z).sample.float().clamp(-1, 1)


def attended_text_mask(batch: dict) -> torch.Tensor:
    """[B, L] CPU mask of the text tokens attention sees: all of them when padding is attended."""
    mask = torch.cat([batch["base_mask"], batch["context_mask"]], 1)
    return torch.ones_like(mask) if batch.get("text_attend") else mask


def encode_batch(enc: FrozenEncoders, batch: dict) -> dict:
    """A loader batch -> the model's inputs on the device: clean latents of every valid frame, prompt states
    (encoded here, or read from the batch when it was pre-encoded).

    Indices of the valid frames and `has_padding` come from the CPU masks, so nothing here waits for the GPU.
    With attended padding, `null_text` (the empty prompt's states) is what guidance dropout puts in.
    """
    dev = enc.device

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(dev, non_blocking=True)  # the loader pins batches on GPU runs

    valid = batch["frame_valid"]
    if "latents" in batch:  # pre-encoded by `datagen encode`: the same tensors, computed once, read from disk
        latents = put(batch["latents"]).float()
        base, context = put(batch["base_states"]).float(), put(batch["context_states"]).float()
    else:
        pixels = batch["pixels"]
        b, f, _, h, w = pixels.shape
        idx = put(valid.flatten().nonzero().squeeze(1))
        flat = enc.encode_images(put(pixels).flatten(0, 1).index_select(0, idx).float())
        latents = flat.new_zeros(b * f, enc.latent_channels, h // enc.down_px, w // enc.down_px)
        latents = latents.index_copy(0, idx, flat).unflatten(0, (b, f))
        base = enc.encode_text(put(batch["base_ids"]), put(batch["base_mask"]))
        context = enc.encode_text(put(batch["context_ids"]), put(batch["context_mask"]))
    segment = torch.cat([torch.zeros(base.shape[:2], dtype=torch.long), torch.ones(context.shape[:2], dtype=torch.long)], 1)
    text_mask = attended_text_mask(batch)
    inputs = {
        "latents": latents, "task": put(batch["task"]), "frame_role": put(batch["frame_role"]),
        "frame_cond": put(batch["frame_cond"]), "frame_valid": put(valid),
        "text": torch.cat([base, context], 1).float(), "text_mask": put(text_mask), "text_segment": put(segment),
        "has_padding": not (bool(valid.all()) and bool(text_mask.all())),
    }
    if batch.get("text_attend"):
        inputs["null_text"] = enc.null_text(base.shape[1], context.shape[1])
    return inputs
