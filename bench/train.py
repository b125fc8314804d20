"""Trainer throughput (steps/s, tokens/s, data-wait share, MFU) and sharded-checkpoint save/load per rank.

Runs the real trainer (`datagen.train.train.run`) on shards written by the foundation's writer.
    python bench/train.py                      # CPU: tiny preset, tiny encoders (what `make bench` runs)
    python bench/train.py --device cuda --preset xl --dtype bf16
GPU runs build random-weight encoders of real shapes (SD VAE, T5 v1.1 XL encoder) offline and load them
through the same `from_pretrained` path as hub weights. MFU counts model FLOPs only (see
datagen/train/throughput.py); VAE/T5 time is in the elapsed time, not in the FLOPs.
The checkpoint part saves and restores model + EMA + AdamW state of `--ckpt-preset` with 1 process and with 2
(FSDP, gloo, on the CPU): per-rank time should stay flat as ranks grow, since each rank writes only its shards.
The pre-encoded part trains again on the same samples after `datagen encode` (data.latents): steps/s without
the VAE and T5 in the step, as a ratio to the run above.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.io.shards import DatasetWriter, ShardLimits  # noqa: E402
from datagen.io.synthetic import make_sample  # noqa: E402
from datagen.train.data import DataConfig  # noqa: E402
from datagen.train.flow import FlowConfig  # noqa: E402
from datagen.train.throughput import device_peak_flops  # noqa: E402
from datagen.train.tiny import build_tiny_text_encoder, build_tiny_vae  # noqa: E402
from datagen.train.train import ModelSection, OptimConfig, SampleConfig, TrainConfig, run  # noqa: E402

T5_V11_XL = {"d_model": 2048, "d_kv": 64, "d_ff": 5120, "num_layers": 24, "num_heads": 32,
             "feed_forward_proj": "gated-gelu", "vocab_size": 32128}
SD_VAE = {"latent_channels": 4, "block_out_channels": (128, 256, 512, 512), "layers_per_block": 2,
          "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
          "norm_num_groups": 32}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", help="model preset (default: tiny on CPU, xl on GPU)")
    p.add_argument("--dtype", choices=["bf16", "fp32"])
    p.add_argument("--image-px", type=int, help="square bucket side (default 32 CPU, 256 GPU)")
    p.add_argument("--batch-size", type=int, help="per device (default 8 CPU, 32 GPU)")
    p.add_argument("--task", type=int, default=1, help="task id of the synthetic samples (1: canvas + target)")
    p.add_argument("--samples", type=int, help="synthetic samples to write (default 64 CPU, 2048 GPU)")
    p.add_argument("--workers", type=int, help="data workers (default 1 CPU, 8 GPU)")
    p.add_argument("--warmup", type=int, help="steps not measured (default 10 CPU, 20 GPU)")
    p.add_argument("--measure", type=int, help="steps measured, a multiple of --warmup (default 20 CPU, 60 GPU)")
    p.add_argument("--encoders", choices=["tiny", "real-shape"], help="default tiny on CPU, real-shape on GPU")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, help="torch.compile each block (default: on GPU)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--ckpt-preset", default="small", help="model preset of the checkpoint benchmark")
    p.add_argument("--ckpt", action=argparse.BooleanOptionalAction, default=True, help="run the checkpoint benchmark")
    p.add_argument("--pre-encoded", action=argparse.BooleanOptionalAction, default=True,
                   help="also train on the same samples pre-encoded by `datagen encode` (data.latents)")
    a = p.parse_args()
    gpu = a.device == "cuda"
    for name, cpu, cuda in [("preset", "tiny", "xl"), ("dtype", "fp32", "bf16"), ("image_px", 32, 256),
                            ("batch_size", 8, 32), ("samples", 64, 2048), ("workers", 1, 8), ("warmup", 10, 20),
                            ("measure", 20, 60), ("encoders", "tiny", "real-shape"), ("compile", False, True)]:
        if getattr(a, name) is None:
            setattr(a, name, cuda if gpu else cpu)
    if a.measure % a.warmup:
        p.error("--measure must be a multiple of --warmup (both are whole logging intervals)")
    return a


def main() -> None:
    a = parse()
    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    real = a.encoders == "real-shape"
    text_encoder = build_tiny_text_encoder(root / "t5", **(T5_V11_XL if real else {}))
    vae = build_tiny_vae(root / "vae", **(SD_VAE if real else {}))
    with DatasetWriter(str(root / "ds"), limits=ShardLimits(max_samples=max(8, a.samples // 16))) as w:
        for i in range(a.samples):
            w.add(make_sample(a.task, f"v{i % 97}", shot=i // 97, pair=i, width=a.image_px, height=a.image_px))
    cfg = TrainConfig(
        run_dir=str(root / "run"), steps=a.warmup + a.measure, device=a.device, precision=a.dtype,
        log_every=a.warmup, ckpt_every=10 ** 9, model=ModelSection(preset=a.preset, text_encoder=text_encoder, vae=vae,
                                                                    grad_checkpointing=a.grad_checkpointing,
                                                                    compile=a.compile),
        data=DataConfig(datasets=[str(root / "ds")], buckets_px=[[a.image_px, a.image_px]], batch_size=a.batch_size,
                        num_workers=a.workers, shuffle_buffer_mb=16, epoch_batches=10 ** 6),
        flow=FlowConfig(), optim=OptimConfig(warmup_steps=10), sample=SampleConfig(every_steps=0),
    )
    if a.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = run(cfg)
    figures = measured_figures(root / "run", a)
    out = {
        "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
        "preset": a.preset, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "dtype": a.dtype, "image_px": a.image_px, "batch_size": a.batch_size, "task": a.task,
        "encoders": a.encoders, "compile": a.compile, **figures,
    }
    if a.device == "cuda":
        out["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 1)
    setup = f"{a.preset} {out['params_M']}M, {a.dtype}, {a.image_px}px, batch {a.batch_size}, {a.workers} workers"
    print(f"# {' '.join(f'{k}={v}' for k, v in out.items())}")
    print(f"train_steps: {out['steps_per_s']:.2f} steps/s ({setup})")
    print(f"train_tokens: {out['tokens_per_s']:.0f} tokens/s")
    print(f"train_data_wait: {100 * out['data_wait_share']:.2f} % of step time")
    peak = device_peak_flops(torch.device(a.device))
    if out["mfu"] is None:
        print(f"train_mfu: n/a ({out['device']}: no bf16 peak in datagen/train/throughput.py)")
    else:
        print(f"train_mfu: {100 * out['mfu']:.1f} % ratio={out['mfu']:.3f} vs {out['device']} dense bf16 peak "
              f"({peak / 1e12:.0f} TFLOP/s)")
    if a.pre_encoded:
        out["pre_encoded"] = pre_encoded_bench(root, cfg, a, out["steps_per_s"])
    if a.ckpt:
        out["checkpoint"] = checkpoint_bench(root / "ckpt", a.ckpt_preset)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    shutil.rmtree(root, ignore_errors=True)


def measured_figures(run_dir: Path, a: argparse.Namespace) -> dict:
    """Steps/s, tokens/s, data wait, TFLOP/s and MFU over the logged intervals after the warm-up one."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in records if r["step"] > a.warmup]
    seconds = sum(a.warmup / r["steps_per_s"] for r in measured)  # each record is one interval of a.warmup steps

    def mean(key: str, digits: int):
        return round(sum(r[key] * a.warmup / r["steps_per_s"] for r in measured) / seconds, digits)

    return {"steps_measured": a.warmup * len(measured), "steps_per_s": round(a.warmup * len(measured) / seconds, 3),
            "tokens_per_s": mean("tokens_per_s", 1), "data_wait_share": mean("data_wait_share", 4),
            "achieved_tflops_per_device": mean("tflops_per_s_per_device", 4),
            "mfu": None if measured[0]["mfu"] is None else mean("mfu", 4)}


def pre_encoded_bench(root: Path, cfg: TrainConfig, a: argparse.Namespace, raw_steps_per_s: float) -> dict:
    """The same run on the same samples, pre-encoded by `datagen encode` (data.latents): no VAE or T5 per step."""
    import dataclasses
    import time

    from datagen.train.encode import encode_dataset

    t0 = time.perf_counter()
    summary = encode_dataset(cfg.data.datasets[0], str(root / "latents"), cfg.model.text_encoder, cfg.model.vae,
                             cfg.data, cfg.precision, a.device, batch_size=a.batch_size)
    encode_s = time.perf_counter() - t0
    pre = dataclasses.replace(cfg, run_dir=str(root / "run_pre"),
                              data=dataclasses.replace(cfg.data, latents=[str(root / "latents")]))
    run(pre)
    figures = measured_figures(root / "run_pre", a)
    ratio = figures["steps_per_s"] / raw_steps_per_s
    print(f"# encode: {summary.samples} samples in {encode_s:.1f} s ({summary.samples / encode_s:.1f} samples/s, "
          f"once per dataset)")
    print(f"train_pre_encoded: {figures['steps_per_s']:.2f} steps/s ratio={ratio:.2f} vs raw_encoders "
          f"(data wait {100 * figures['data_wait_share']:.2f} %)")
    return {**figures, "encode_s": round(encode_s, 2), "ratio_vs_raw": round(ratio, 3)}


def _ckpt_worker(rank: int, world: int, port: int, preset: str, root: str, out: str, group_of_one: bool) -> None:
    import gc
    import os
    import time

    import torch.distributed as dist

    from datagen.train import checkpoint, parallel
    from datagen.train.ema import make_ema
    from datagen.train.model import FrameDiT
    from datagen.train.presets import model_config
    from datagen.train.train import freeze_setup

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    d = parallel.init_distributed("cpu")
    if group_of_one:  # the same code path as 2 ranks (gloo, FSDP, DTensor state dicts), on one rank
        dist.init_process_group("gloo", rank=0, world_size=1)
    torch.manual_seed(0)
    raw = FrameDiT(model_config(preset))
    model, ema = parallel.wrap(raw, make_ema(raw), "fsdp", d)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # AdamW state exists: the checkpoint holds 4 copies of the weights (model, EMA, 2 moments)
    freeze_setup()  # as the trainer does once its model and optimizer are built

    def timed(fn) -> float:
        if dist.is_initialized():
            dist.barrier()
        t0 = time.perf_counter()
        fn()
        seconds = torch.tensor(time.perf_counter() - t0)
        if dist.is_initialized():
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the slowest rank is what the job waits for
        return float(seconds)

    first_save_s = timed(lambda: checkpoint.save(root, 1, model, ema, optimizer, scheduler, {}, 2, d.is_main))
    # every later save of a run: the ranks' save plans are cached (checkpoint.save); keep 2: no deletion timed
    save_s = timed(lambda: checkpoint.save(root, 2, model, ema, optimizer, scheduler, {}, 2, d.is_main))
    load_s = timed(lambda: checkpoint.restore(checkpoint.latest(root), model, ema, optimizer, scheduler))
    if d.is_main:
        written = sum(f.stat().st_size for f in checkpoint.latest(root).iterdir())
        Path(out).write_text(json.dumps({"first_save_s": first_save_s, "save_s": save_s, "load_s": load_s,
                                         "mb_per_rank": written / world / 1e6}))
    gc.unfreeze()  # as the trainer does before it ends its process group
    parallel.close()


def checkpoint_bench(root: Path, preset: str) -> dict:
    """Save and restore seconds of the slowest rank, with 1 and with 2 processes (best of 2 runs each)."""
    import socket

    import torch.multiprocessing as mp

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    # "1": one plain process (no process group, unwrapped model); "1g": one rank of a gloo group, FSDP, so
    # that against it "2" shows what grows with the ranks, apart from the step from one process to a group
    figures = {}
    for name, world in (("1", 1), ("1g", 1), ("2", 2)):
        runs = []
        for attempt in range(2):  # interleaving would not help: each run is its own processes
            out = root / f"w{name}_{attempt}.json"
            mp.spawn(_ckpt_worker, args=(world, free_port(), preset, str(root / f"w{name}_{attempt}"), str(out),
                                         name == "1g"), nprocs=world, join=True)
            runs.append(json.loads(out.read_text()))
        figures[name] = {k: min(r[k] for r in runs) for k in runs[0]}
    one, group, two = figures["1"], figures["1g"], figures["2"]
    print(f"# checkpoint: {preset} preset, model + EMA + AdamW state, {one['mb_per_rank']:.0f} MB on 1 process")
    for key, what in (("first_save_s", "first_save"), ("save_s", "save"), ("load_s", "load")):
        print(f"checkpoint_{what}_per_rank/1proc: {one[key]:.2f} s ({one['mb_per_rank']:.0f} MB per rank)")
        print(f"checkpoint_{what}_per_rank/1rank_fsdp: {group[key]:.2f} s ratio={group[key] / one[key]:.2f} vs 1 "
              f"process (a gloo group of one, FSDP)")
        print(f"checkpoint_{what}_per_rank/2proc: {two[key]:.2f} s ratio={two[key] / group[key]:.2f} vs 1 rank "
              f"of FSDP, {two[key] / one[key]:.2f} vs 1 process ({two['mb_per_rank']:.0f} MB per rank)")
    return figures


if __name__ == "__main__":
    main()
