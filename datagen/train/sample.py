"""Euler ODE sampling with classifier-free guidance, for any task; `datagen sample` and the trainer's previews."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datagen import UserError
from datagen.train import flow
from datagen.train.conditioning import model_kwargs
from datagen.train.data import frames_batch, image_to_tensor, nearest_bucket, tensor_to_image, tokenize
from datagen.train.model import ROLE_INDEX


def _variant(inputs: dict, x: torch.Tensor, drop_text: bool, drop_images: bool) -> tuple[dict, torch.Tensor]:
    """The model inputs of one guidance branch: the same dropout training applied."""
    b = x.shape[0]
    full = lambda on: torch.full((b,), on, dtype=torch.bool)  # noqa: E731
    return model_kwargs(inputs, x, full(drop_text), full(drop_text), full(drop_images))


@torch.no_grad()
def generate(model, inputs: dict, steps: int, text_guidance: float, image_guidance: float, shift: float = 1.0,
             generator: torch.Generator | None = None, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Integrate the target frames from noise (t=1) to data (t=0); condition frames stay clean.

    Guidance as InstructPix2Pix: v = v(none) + s_img (v(images) - v(none)) + s_text (v(text, images) - v(images)).
    Returns latents [B,F,C,h,w] with the generated targets in place.
    """
    x0 = inputs["latents"]
    is_target = (inputs["frame_valid"] & ~inputs["frame_cond"])[:, :, None, None, None]
    x = torch.where(is_target, torch.randn(x0.shape, generator=generator, device=x0.device), x0)
    has_images = bool(inputs["frame_cond"].any())
    branches = [(False, False), (True, False)] + ([(True, True)] if has_images else [])
    ts = flow.timesteps(steps, shift).tolist()
    amp = torch.autocast(x0.device.type, autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    for t, t_next in zip(ts[:-1], ts[1:]):
        variants = [_variant(inputs, x, *branch) for branch in branches]
        stacked = {k: torch.cat([kw[k] for kw, _ in variants]) for k in variants[0][0] if k != "has_padding"}
        stacked["has_padding"] = any(kw["has_padding"] for kw, _ in variants)
        t_batch = torch.full((x.shape[0] * len(variants),), t, device=x.device)
        with amp:
            out = model(torch.cat([lat for _, lat in variants]), t_batch, **stacked)
        v = out.float().chunk(len(variants))
        v_none = v[2] if has_images else v[1]
        v_img = v[1]
        guided = v_none + image_guidance * (v_img - v_none) + text_guidance * (v[0] - v_img)
        x = torch.where(is_target, flow.euler_step(x, guided, t, t_next), x0)
    return x


def target_pixels(enc, latents: torch.Tensor, frame_valid: torch.Tensor) -> torch.Tensor:
    """Decode each sample's target frame (its last valid frame) -> [B,3,H,W] in [-1,1]."""
    last = frame_valid.long().sum(1) - 1
    return enc.decode_images(latents[torch.arange(latents.shape[0], device=latents.device), last])


def preview_grid(pixels: torch.Tensor, frame_valid: torch.Tensor, generated: torch.Tensor) -> np.ndarray:
    """One row per sample: its input frames, the ground-truth target, then the generated one."""
    rows = []
    for i in range(pixels.shape[0]):
        tiles = [pixels[i, j] for j in range(int(frame_valid[i].sum()))] + [generated[i].cpu()]
        tiles += [torch.zeros_like(tiles[0])] * (pixels.shape[1] + 1 - len(tiles))
        rows.append(torch.cat(tiles, 2))
    grid = torch.cat(rows, 1).float()
    return ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()


def parse_images(spec, images: list[str]) -> list[tuple[object, Path]]:
    """`ROLE=PATH` arguments -> (slot, path), checked against the task's input slots."""
    from schemas.tasks import input_slots

    assets = sum(1 for s in images if s.split("=", 1)[0] == "asset")
    slots = input_slots(spec, max(assets, 1))
    if len(images) != len(slots):
        want = ", ".join(s.role.value for s in slots) or "none"
        raise UserError(f"task {spec.name} takes {len(slots)} input image(s) ({want}); got {len(images)}")
    out = []
    for arg, slot in zip(images, slots):
        role, _, path = arg.partition("=")
        if role != slot.role.value or not path:
            raise UserError(f"--image {arg!r}: task {spec.name} expects {slot.role.value}=PATH here")
        if not Path(path).is_file():
            raise UserError(f"--image {arg!r}: file {path!r} not found")
        out.append((slot, Path(path)))
    return out


def sample_cli(checkpoint: str | Path, task: str, prompt: str, images: list[str], out: str | Path,
               context: str = "") -> Path:
    """`datagen sample`: one target for one prompt (+ input images) from a checkpoint's EMA weights."""
    from datagen.config import from_dict
    from datagen.media import decode_image, encode_image
    from datagen.train.checkpoint import load_weights, read_meta
    from datagen.train.encoders import FrozenEncoders, encode_batch, load_tokenizer
    from datagen.train.model import FrameDiT
    from datagen.train.presets import ModelConfig
    from datagen.train.train import TrainConfig
    from schemas.members import target_member
    from schemas.tasks import Role, task as task_spec

    try:
        spec = task_spec(task)
    except KeyError as e:
        raise UserError(str(e.args[0])) from None
    inputs = parse_images(spec, images)
    meta = read_meta(checkpoint)
    cfg = from_dict(TrainConfig, meta["config"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_weights(checkpoint, "ema", FrameDiT(ModelConfig(**meta["model_config"])))
    model.to(device).eval()
    enc = FrozenEncoders(cfg.model.text_encoder, cfg.model.vae, device, torch.float32)
    decoded = [(slot, decode_image(path.read_bytes(), slot.kind)) for slot, path in inputs]
    buckets = [tuple(b) for b in cfg.data.buckets_px]
    size = buckets[0]
    if decoded:
        h, w = decoded[0][1].shape[:2]
        size = buckets[nearest_bucket(buckets, w, h)]
    frames = [(image_to_tensor(a, slot.kind, size), ROLE_INDEX[slot.role]) for slot, a in decoded]
    frames.append((torch.zeros(3, *size), ROLE_INDEX[Role.target]))
    batch = frames_batch([frames], [spec.id])
    tok = load_tokenizer(cfg.model.text_encoder)
    fixed = cfg.data.text_padding == "attend"
    batch["base_ids"], batch["base_mask"] = tokenize(tok, [prompt], cfg.data.max_base_tokens, fixed)
    batch["context_ids"], batch["context_mask"] = tokenize(tok, [context], cfg.data.max_context_tokens, fixed)
    batch["text_attend"] = fixed
    model_inputs = encode_batch(enc, batch)
    s = cfg.sample
    gen = torch.Generator(device).manual_seed(cfg.seed)
    latents = generate(model, model_inputs, s.steps, s.text_guidance, s.image_guidance, s.shift, gen)
    pixels = target_pixels(enc, latents, model_inputs["frame_valid"])[0]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / target_member(spec.target)
    path.write_bytes(encode_image(tensor_to_image(pixels, spec.target), spec.target))
    return path


def write_preview(path: Path, grid: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
