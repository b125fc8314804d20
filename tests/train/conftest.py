"""Tiny encoders and a tiny dataset written by the foundation's shard writer, shared by the trainer tests."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datagen.io.shards import DatasetWriter, ShardLimits
from datagen.io.synthetic import make_sample
from datagen.train.data import DataConfig
from datagen.train.flow import FlowConfig
from datagen.train.train import ModelSection, OptimConfig, SampleConfig, TrainConfig


# 2 shared cores: one intra-op thread avoids oversubscription stalls (4x faster steps here)
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[str, str]:
    from datagen.train.tiny import build_tiny_text_encoder, build_tiny_vae

    root = tmp_path_factory.mktemp("models")
    return build_tiny_text_encoder(root / "t5"), build_tiny_vae(root / "vae")


def write_dataset(root: Path, tasks: dict[int, int], *, size_px: tuple[int, int] = (32, 32),
                  samples_per_shard: int = 1000) -> str:
    """`tasks`: task id -> number of samples; `samples_per_shard` bounds shards (many shards for split tests)."""
    with DatasetWriter(str(root), limits=ShardLimits(max_samples=samples_per_shard)) as w:
        for tid, n in tasks.items():
            for i in range(n):
                w.add(make_sample(tid, f"vid{i % 3}", shot=i // 3, pair=i, width=size_px[1], height=size_px[0]))
    return str(root)


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> str:
    """Every task once or twice: variable frame counts (0 to 2 inputs) and every image kind."""
    return write_dataset(tmp_path_factory.mktemp("ds"), {t: 2 for t in range(9)})


def tiny_config(run_dir: Path, models: tuple[str, str], dataset: str, *, steps: int = 10, batch_size: int = 4,
                **overrides) -> TrainConfig:
    """A CPU config of the tiny preset: fp32, no workers, no warm-up unless asked."""
    cfg = TrainConfig(
        run_dir=str(run_dir), steps=steps, device="cpu", precision="fp32", log_every=1, ckpt_every=steps,
        ema_decay=0.99,
        model=ModelSection(preset="tiny", text_encoder=models[0], vae=models[1]),
        data=DataConfig(datasets=[dataset], buckets_px=[[32, 32]], batch_size=batch_size, num_workers=0,
                        shuffle_buffer_mb=0.05, epoch_batches=5, max_base_tokens=16, max_context_tokens=16),
        flow=FlowConfig(), optim=OptimConfig(lr=1e-3, warmup_steps=0), sample=SampleConfig(every_steps=0, steps=4),
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def saved_weights(path: Path, part: str = "model") -> dict[str, torch.Tensor]:
    """`part` ("model" or "ema") of a checkpoint, read in one process whatever world size wrote it."""
    from datagen.train import checkpoint
    from datagen.train.model import FrameDiT
    from datagen.train.presets import ModelConfig

    model = FrameDiT(ModelConfig(**checkpoint.read_meta(path)["model_config"]))
    return checkpoint.load_weights(path, part, model).state_dict()
