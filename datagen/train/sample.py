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


class Sampler:
    """A checkpoint's EMA model with its frozen encoders and tokenizer, loaded once for any number of samples."""

    def __init__(self, checkpoint: str | Path):
        from datagen.config import from_dict
        from datagen.train.checkpoint import load_weights, read_meta
        from datagen.train.encoders import FrozenEncoders, load_tokenizer
        from datagen.train.model import FrameDiT
        from datagen.train.presets import ModelConfig
        from datagen.train.train import TrainConfig

        meta = read_meta(checkpoint)
        self.cfg = from_dict(TrainConfig, meta["config"])
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_weights(checkpoint, "ema", FrameDiT(ModelConfig(**meta["model_config"])))
        self.model.to(self.device).eval()
        self.enc = FrozenEncoders(self.cfg.model.text_encoder, self.cfg.model.vae, self.device, torch.float32)
        self.tokenizer = load_tokenizer(self.cfg.model.text_encoder)
        self.buckets = [tuple(b) for b in self.cfg.data.buckets_px]

    def sample(self, spec, prompt: str, inputs: list[tuple[object, np.ndarray]], context: str = "") -> np.ndarray:
        """One target of task `spec` for a prompt and decoded input images [(slot, array), ...], as training
        saw such samples: the same roles, condition flags, bucket sizes and text layout."""
        from datagen.train.encoders import encode_batch
        from schemas.tasks import Role

        size = self.buckets[0]
        if inputs:
            h, w = inputs[0][1].shape[:2]
            size = self.buckets[nearest_bucket(self.buckets, w, h)]
        frames = [(image_to_tensor(a, slot.kind, size), ROLE_INDEX[slot.role]) for slot, a in inputs]
        frames.append((torch.zeros(3, *size), ROLE_INDEX[Role.target]))
        batch = frames_batch([frames], [spec.id])
        d = self.cfg.data
        fixed = d.text_padding == "attend"
        batch["base_ids"], batch["base_mask"] = tokenize(self.tokenizer, [prompt], d.max_base_tokens, fixed)
        batch["context_ids"], batch["context_mask"] = tokenize(self.tokenizer, [context], d.max_context_tokens, fixed)
        batch["text_attend"] = fixed
        model_inputs = encode_batch(self.enc, batch)
        s = self.cfg.sample
        gen = torch.Generator(self.device).manual_seed(self.cfg.seed)
        latents = generate(self.model, model_inputs, s.steps, s.text_guidance, s.image_guidance, s.shift, gen)
        pixels = target_pixels(self.enc, latents, model_inputs["frame_valid"])[0]
        return tensor_to_image(pixels, spec.target)


def _task(name: str):
    from schemas.tasks import task as task_spec

    try:
        return task_spec(name)
    except KeyError as e:
        raise UserError(str(e.args[0])) from None


def sample_cli(checkpoint: str | Path, task: str, prompt: str, images: list[str], out: str | Path,
               context: str = "") -> Path:
    """`datagen sample`: one target for one prompt (+ input images) from a checkpoint's EMA weights."""
    from datagen.media import decode_image, encode_image
    from schemas.members import target_member

    spec = _task(task)
    inputs = parse_images(spec, images)
    sampler = Sampler(checkpoint)
    image = sampler.sample(spec, prompt, [(slot, decode_image(path.read_bytes(), slot.kind)) for slot, path in inputs],
                           context)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / target_member(spec.target)
    path.write_bytes(encode_image(image, spec.target))
    return path


def parse_chain(links: list[str]) -> list[tuple[object, str]]:
    """`TASK=PROMPT` links -> (task spec, prompt); each link's task must take exactly one canvas."""
    from schemas.tasks import ImageKind, Role

    out = []
    for link in links:
        name, sep, prompt = link.partition("=")
        spec = _task(name.strip())
        if not sep or len(spec.inputs) != 1 or spec.inputs[0].role is not Role.canvas or spec.repeat_assets:
            raise UserError(f"--chain {link!r}: give TASK=PROMPT with a task that takes one canvas (the previous "
                            f"image), e.g. instruction_edit=\"make it night\"")
        out.append((spec, prompt))
    for (spec, _), link in zip(out[:-1], links[:-1]):
        if spec.target is not ImageKind.rgb:
            raise UserError(f"--chain {link!r}: only a link that makes an RGB image can feed the next one")
    return out


def chain_cli(checkpoint: str | Path, prompt: str, links: list[str], out: str | Path, images: list[str] = (),
              task: str = "text_to_image", context: str = "") -> list[Path]:
    """`datagen sample --chain`: Emu Video's factorization with one model. The first sample (text -> image by
    default) becomes the canvas of the next link (an instruction edit, depth, edges...), and so on.

    Writes OUT/0_<task>.<ext>, OUT/1_<task>.<ext>, ... in chain order."""
    from datagen.media import decode_image, encode_image
    from schemas.members import target_member
    from schemas.tasks import ImageKind

    first = _task(task)
    chain = parse_chain(links)
    if chain and first.target is not ImageKind.rgb:
        raise UserError(f"--task {task}: a chain starts from a task that makes an RGB image")
    inputs = [(slot, decode_image(path.read_bytes(), slot.kind)) for slot, path in parse_images(first, list(images))]
    sampler = Sampler(checkpoint)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, image = [], None
    for i, (spec, text) in enumerate([(first, prompt), *chain]):
        image = sampler.sample(spec, text, inputs if i == 0 else [(spec.inputs[0], image)], context if i == 0 else "")
        path = out_dir / f"{i}_{spec.name}.{target_member(spec.target).rsplit('.', 1)[1]}"
        path.write_bytes(encode_image(image, spec.target))
        written.append(path)
    return written


def write_preview(path: Path, grid: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
