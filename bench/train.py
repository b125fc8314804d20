"""Trainer throughput: tokens/s, steps/s, data-wait share and MFU of one preset on synthetic shards.

Runs the real trainer (`datagen.train.train.run`) on shards written by the foundation's writer.
    python bench/train.py                      # CPU: tiny preset, tiny encoders (what `make bench` runs)
    python bench/train.py --device cuda --preset xl --dtype bf16
GPU runs build random-weight encoders of real shapes (SD VAE, T5 v1.1 XL encoder) offline and load them
through the same `from_pretrained` path as hub weights. MFU counts model FLOPs only (see
datagen/train/throughput.py); VAE/T5 time is in the elapsed time, not in the FLOPs.
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
    records = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    measured = [r for r in records if r["step"] > a.warmup]
    seconds = sum(a.warmup / r["steps_per_s"] for r in measured)  # each record is one interval of a.warmup steps
    steps = a.warmup * len(measured)
    out = {
        "device": torch.cuda.get_device_name() if a.device == "cuda" else "cpu",
        "preset": a.preset, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "dtype": a.dtype, "image_px": a.image_px, "batch_size": a.batch_size, "task": a.task,
        "encoders": a.encoders, "compile": a.compile, "steps_measured": steps,
        "steps_per_s": round(steps / seconds, 3),
        "tokens_per_s": round(sum(r["tokens_per_s"] * a.warmup / r["steps_per_s"] for r in measured) / seconds, 1),
        "data_wait_share": round(sum(r["data_wait_share"] * a.warmup / r["steps_per_s"] for r in measured) / seconds, 4),
        "achieved_tflops_per_device": round(sum(r["tflops_per_s_per_device"] * a.warmup / r["steps_per_s"]
                                                for r in measured) / seconds, 4),
        "mfu": None if measured[0]["mfu"] is None else round(sum(r["mfu"] * a.warmup / r["steps_per_s"]
                                                                 for r in measured) / seconds, 4),
    }
    if a.device == "cuda":
        out["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 1)
    line = " ".join(f"{k}={v}" for k, v in out.items())
    print(f"bench/train.py: {line}")
    if out["mfu"] is None:
        print("bench/train.py: mfu=n/a (no bf16 peak for this device in datagen/train/throughput.py)")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
