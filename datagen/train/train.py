"""`datagen train`: flow-matching training of the frame-sequence DiT on datagen shards.

setup (process group, seeds) -> frozen encoders -> model, EMA, optimizer -> resume -> data -> loop
(per micro-batch: encode, noise the targets, predict velocity, accumulate; then step, EMA) -> logs, previews,
checkpoints.
Launch with `torchrun --nproc_per_node=G -m datagen train --config FILE` on one or many nodes.
"""
from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from datagen.config import to_dict
from datagen.train import checkpoint, flow, parallel
from datagen.train.conditioning import model_kwargs
from datagen.train.data import DataConfig, ShardStream, train_batches
from datagen.train.ema import make_ema, update_ema
from datagen.train.flow import FlowConfig
from datagen.train.encoders import FrozenEncoders, attended_text_mask, encode_batch, encoder_dtype
from datagen.train.model import FrameDiT
from datagen.train.presets import model_config
from datagen.train.throughput import Meter, batch_flops
from schemas.tasks import TASK_BY_ID


@dataclass
class ModelSection:
    preset: str = "xl"  # see datagen/train/presets.py
    text_encoder: str = "google/t5-v1_1-xl"  # a T5 encoder path or hub id (PixArt/Imagen use T5 text features)
    vae: str = "stabilityai/sd-vae-ft-ema"  # a diffusers AutoencoderKL path or hub id
    # CPU smoke runs: build random tiny encoders at text_encoder / vae when those paths do not exist yet
    # (off by default: a mistyped path to real weights must stay an error)
    tiny_encoders: bool = False
    grad_checkpointing: bool = False
    compile: bool = False  # torch.compile each block: faster on GPU once shapes settle (fixed buckets help)


@dataclass
class OptimConfig:
    lr: float = 1e-4  # DiT and SD3 train at 1e-4 with AdamW
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])  # beta2 0.95: steadier large transformers
    weight_decay: float = 0.0  # DiT trains without weight decay
    warmup_steps: int = 1000
    schedule: Literal["constant", "cosine"] = "constant"  # DiT/SD3 hold lr after warm-up; cosine for fixed budgets
    min_lr_ratio: float = 0.1  # cosine floor, as a share of lr
    grad_clip: float = 1.0


@dataclass
class SampleConfig:
    every_steps: int = 2000  # preview images in RUN_DIR/samples; 0 = never
    count: int = 4  # samples of the first batch, per preview
    steps: int = 28  # Euler steps (SD3's default)
    text_guidance: float = 4.0
    image_guidance: float = 1.5  # InstructPix2Pix's default image scale
    shift: float = 1.0  # > 1 spends steps near noise; SD3 uses 3.0 at 1024 px


@dataclass
class TrainConfig:
    run_dir: str = "runs/unireal"
    steps: int = 200_000
    seed: int = 0
    device: Literal["auto", "cuda", "cpu"] = "auto"
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 autocast; weights, optimizer and EMA stay fp32
    parallel: Literal["ddp", "fsdp"] = "ddp"  # fsdp shards params/grads/optimizer: for models that do not fit
    # micro-batches per optimizer step: global batch = world x data.batch_size x this, whatever the GPU count
    grad_accum_steps: int = 1
    ema_decay: float = 0.9999  # DiT's EMA decay
    log_every: int = 50
    ckpt_every: int = 2000
    keep_checkpoints: int = 3
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)



def lr_factor(step: int, o: OptimConfig, total: int) -> float:
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - o.warmup_steps) / max(1, total - o.warmup_steps))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


_SEED_BITS = 0x7FFF_FFFF_FFFF_FFFF


def draw(seed: int, rank: int, step: int, first: int, n: int, frame_shape: torch.Size, fcfg: FlowConfig,
         device: torch.device) -> dict:
    """Timesteps, target noise and guidance dropout of samples first .. first+n-1 of optimizer step `step`.

    Each sample's draws are a function of (seed, rank, step, its index in the step): a resumed run redraws
    the same, and one batch of 8 draws what two accumulated batches of 4 draw. t and dropout are drawn on
    the CPU, so deciding whether attention needs a mask never waits for the GPU."""
    p = torch.tensor([fcfg.text_drop, fcfg.context_drop, fcfg.image_drop])
    ts, drops, noise = [], [], []
    for i in range(first, first + n):
        cpu = torch.Generator().manual_seed(hash((seed, rank, step, i, 0)) & _SEED_BITS)
        ts.append(flow.sample_t(1, fcfg, cpu, "cpu"))
        drops.append(torch.rand(3, generator=cpu) < p)
        on_device = torch.Generator(device).manual_seed(hash((seed, rank, step, i, 1)) & _SEED_BITS)
        noise.append(torch.randn(frame_shape, generator=on_device, device=device))
    return {"t": torch.cat(ts).to(device), "noise": torch.stack(noise), "drop": torch.stack(drops)}


def flow_loss(model, inputs: dict, draws: dict, amp_dtype) -> torch.Tensor:
    """Noise the target frame, drop conditions for guidance, regress the velocity on target frames only.

    Returns the per-sample loss [B]."""
    x0, t = inputs["latents"], draws["t"]
    is_target = (inputs["frame_valid"] & ~inputs["frame_cond"])[:, :, None, None, None]
    noise = draws["noise"][:, None].expand_as(x0)  # one target frame per sample: its noise, kept only there
    x_t = torch.where(is_target, flow.interpolate(x0, noise, t), x0)
    drop = draws["drop"]
    kwargs, x_t = model_kwargs(inputs, x_t, drop[:, 0], drop[:, 1], drop[:, 2])
    with torch.autocast(x0.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        pred = model(x_t, t, **kwargs)
    per_frame = ((pred.float() - flow.velocity(x0, noise)) ** 2).mean((2, 3, 4))
    weight = is_target[:, :, 0, 0, 0].float()
    return (per_frame * weight).sum(1) / weight.sum(1).clamp(min=1)


def freeze_setup() -> None:
    """What is built before the first step (torch, the model, EMA, optimizer) lives all run: moved
    out of the garbage collector's reach once, its garbage collected first.

    Every full collection walked those objects: 0.25 s each on the small preset, in one rank
    at a time, while the others wait at the next collective. Checkpoint save and load set
    them off (their ~10^5 small objects; checkpoint.no_collection defers the collection to
    the call's end, this makes it cheap). DataLoader workers forked after this also leave
    the frozen objects' pages unwritten (the gc.freeze documentation's advice for fork).
    `run` unfreezes them before it ends its process group, so that they are freed as before
    (nanobind, in triton, reports objects still frozen at exit as leaked).
    """
    gc.collect()
    gc.freeze()


def run(cfg: TrainConfig, resume: bool = False, stop_at: int | None = None) -> torch.nn.Module:
    """Train up to cfg.steps (from the latest checkpoint when resuming); returns this rank's trained model.

    `stop_at` pauses earlier with a checkpoint (e.g. before a job's time limit); the schedule still spans cfg.steps.
    """
    end = min(cfg.steps, stop_at or cfg.steps)
    if cfg.grad_accum_steps < 1:
        from datagen import UserError

        raise UserError(f"grad_accum_steps must be >= 1 (got {cfg.grad_accum_steps})")
    d = parallel.init_distributed(cfg.device)
    run_dir = Path(cfg.run_dir)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    amp_dtype = torch.bfloat16 if cfg.precision == "bf16" else None
    if cfg.model.tiny_encoders:
        _build_tiny_encoders(cfg.model, d)
    # pre-encoded data: the VAE stays for previews only, the text encoder is not loaded at all
    enc = FrozenEncoders(cfg.model.text_encoder, cfg.model.vae, d.device, encoder_dtype(cfg.precision, d.device),
                         load_text=not cfg.data.latents)
    if cfg.data.latents:
        _use_pre_encoded(cfg, enc)
    mcfg = model_config(cfg.model.preset, latent_channels=enc.latent_channels, text_dim=enc.text_dim,
                        grad_checkpointing=cfg.model.grad_checkpointing)
    _check_shapes(cfg, enc.down_px * mcfg.patch, mcfg.max_text_tokens)
    raw_model = FrameDiT(mcfg).to(d.device)
    ema = make_ema(raw_model)
    if cfg.model.compile:
        for blk in raw_model.blocks:
            blk.compile()
    model, ema = parallel.wrap(raw_model, ema, cfg.parallel, d, amp_dtype)
    o = cfg.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
                                  fused=d.device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, o, cfg.steps))
    freeze_setup()
    step, data_state = 0, {"epoch": 0, "batches_into_epoch": 0}
    last = checkpoint.latest(run_dir) if resume else None
    if last is not None:
        meta = checkpoint.restore(last, model, ema, optimizer, scheduler)
        step, data_state = meta["step"], meta["data"]
    stream = ShardStream(cfg.data, cfg.model.text_encoder)
    batches = train_batches(stream, cfg.data, data_state, pin_memory=d.device.type == "cuda")
    writer = None
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=step)
        print(f"run {run_dir}: {sum(p.numel() for p in raw_model.parameters()) / 1e6:.1f}M params "
              f"({cfg.model.preset}), {d.world} process(es) on {d.device.type}, from step {step}", flush=True)
    meter = Meter(d.device)
    flops_per_token = raw_model.flops_per_token()
    preview_batch = None
    loss_sum = torch.zeros((), device=d.device)
    task_loss = torch.zeros(2, mcfg.max_tasks, device=d.device)  # sum, count per task id
    model.train()
    accum = cfg.grad_accum_steps
    while step < end:
        t0 = time.perf_counter()
        micro = [next(batches) for _ in range(accum)]
        meter.waited(time.perf_counter() - t0)
        preview_batch = preview_batch or _head(micro[0], cfg.sample.count)
        samples = sum(len(b["keys"]) for b in micro)  # the loss is the mean over every sample of the step
        optimizer.zero_grad(set_to_none=True)
        first, tokens, flops = 0, 0.0, 0.0
        for m, batch in enumerate(micro):
            inputs = encode_batch(enc, batch)
            n = len(batch["keys"])
            draws = draw(cfg.seed, d.rank, step, first, n, inputs["latents"].shape[2:], cfg.flow, d.device)
            first += n
            with parallel.grad_sync(model, enabled=m == accum - 1):
                per_sample = flow_loss(model, inputs, draws, amp_dtype)
                (per_sample.sum() / samples).backward()
            per_sample = per_sample.detach()
            loss_sum += per_sample.sum() / samples
            task_loss[0].index_add_(0, inputs["task"], per_sample)
            task_loss[1].index_add_(0, inputs["task"], torch.ones_like(per_sample))
            tokens_per_frame = math.prod(inputs["latents"].shape[-2:]) // mcfg.patch ** 2
            counted = batch_flops(flops_per_token, raw_model.attention_flops, attended_text_mask(batch),
                                  batch["frame_valid"], tokens_per_frame)
            tokens, flops = tokens + counted[0], flops + counted[1]
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: a DTensor
        optimizer.step()
        scheduler.step()
        update_ema(ema, model, cfg.ema_decay, step)
        step += 1
        meter.step(tokens, flops)
        if step % cfg.log_every == 0 or step == end:
            n_steps = meter.steps
            figures = meter.report(d.world)
            stats = parallel.all_reduce_sum(torch.cat([loss_sum[None] / n_steps / d.world, task_loss.flatten()]))
            per_task = stats[1:].view(2, -1)
            record = {"step": step, "loss": stats[0].item(), "lr": scheduler.get_last_lr()[0],
                      "grad_norm": float(grad_norm), **figures,
                      "loss_per_task": {TASK_BY_ID[i].name: (per_task[0, i] / per_task[1, i]).item()
                                        for i in torch.nonzero(per_task[1]).flatten().tolist()}}
            loss_sum.zero_()
            task_loss.zero_()
            if writer is not None:
                _log(writer, run_dir, record)
        if cfg.sample.every_steps and (step % cfg.sample.every_steps == 0):
            _preview(run_dir / "samples" / f"step_{step:08d}.png", ema, enc, preview_batch, cfg, d, amp_dtype)
        if step % cfg.ckpt_every == 0 or step == end:
            checkpoint.save(run_dir, step, model, ema, optimizer, scheduler,
                            {"config": to_dict(cfg), "model_config": asdict(mcfg), "data": dict(stream.position)},
                            cfg.keep_checkpoints, d.is_main)
    if writer is not None:
        writer.close()
    gc.unfreeze()  # (see freeze_setup)
    parallel.close()
    return raw_model


def _build_tiny_encoders(m: ModelSection, d) -> None:
    """Rank 0 builds what is missing (one line saying so); the others wait for it."""
    from datagen.train.tiny import ensure_tiny_encoders

    if d.is_main:
        built = ensure_tiny_encoders(m.text_encoder, m.vae)
        if built:
            print(f"built tiny random encoders at {' and '.join(built)} (model.tiny_encoders: a smoke run, "
                  f"not real weights)", flush=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _use_pre_encoded(cfg: TrainConfig, enc: FrozenEncoders) -> None:
    """Check each `data.latents` sidecar against this config's encoders and buckets (one-line UserError when
    they differ or a shard is missing); the stored empty prompt stands in for the unloaded text encoder."""
    from datagen.train.preencoded import encoding_for, open_encoding, sidecar_pairs

    expected = encoding_for(cfg.model.text_encoder, cfg.model.vae, cfg.data, enc)
    for dataset, latents in sidecar_pairs(cfg.data):
        null = open_encoding(dataset, latents, expected)
    enc.set_null_text(null, cfg.data.max_base_tokens, cfg.data.max_context_tokens)  # equal in all: same encoders


def _head(batch: dict, n: int) -> dict:
    """The first n samples of a loader batch (flags kept whole)."""
    return {k: v[:n] if isinstance(v, (torch.Tensor, list)) else v for k, v in batch.items()}


def _check_shapes(cfg: TrainConfig, px_per_token: int, max_text_tokens: int) -> None:
    from datagen import UserError

    for h, w in cfg.data.buckets_px:
        if h % px_per_token or w % px_per_token:
            raise UserError(f"data.buckets_px: {h}x{w} is not a multiple of {px_per_token} px "
                            f"(VAE downsampling x patch size)")
    if cfg.data.max_base_tokens + cfg.data.max_context_tokens > max_text_tokens:
        raise UserError(f"data.max_base_tokens + data.max_context_tokens exceeds the model's {max_text_tokens} "
                        f"text positions")


def _log(writer, run_dir: Path, record: dict) -> None:
    step = record["step"]
    for key, value in record.items():
        if key == "loss_per_task":
            for name, v in value.items():
                writer.add_scalar(f"loss_per_task/{name}", v, step)
        elif key != "step" and value is not None:
            writer.add_scalar(f"train/{key}", value, step)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    mfu = f"{record['mfu']:.1%}" if record["mfu"] is not None else "n/a"
    print(f"step {step} loss {record['loss']:.4f} lr {record['lr']:.2e} gnorm {record['grad_norm']:.3f} "
          f"{record['steps_per_s']:.2f} step/s {record['tokens_per_s']:.0f} tok/s mfu {mfu} "
          f"data wait {record['data_wait_share']:.1%}", flush=True)


def _preview(path: Path, ema, enc, batch: dict, cfg: TrainConfig, d, amp_dtype) -> None:
    """Sample the first batch's prompts and conditions with the EMA weights (all ranks: FSDP needs them)."""
    from datagen.train.sample import generate, preview_grid, target_pixels, write_preview

    inputs = encode_batch(enc, batch)
    s = cfg.sample
    gen = torch.Generator(d.device).manual_seed(cfg.seed)
    latents = generate(ema, inputs, s.steps, s.text_guidance, s.image_guidance, s.shift, gen, amp_dtype)
    generated = target_pixels(enc, latents, inputs["frame_valid"])
    if d.is_main:
        pixels = batch.get("pixels")
        if pixels is None:  # pre-encoded: show the inputs as the VAE decodes them
            pixels = enc.decode_images(inputs["latents"].flatten(0, 1)).unflatten(0, inputs["latents"].shape[:2])
        write_preview(path, preview_grid(pixels.cpu(), batch["frame_valid"], generated))
