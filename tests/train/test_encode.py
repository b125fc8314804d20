"""`datagen encode`: sidecar latents equal to encode_batch, training on them, resume after SIGKILL, bad inputs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from datagen import UserError
from datagen.config import to_dict
from datagen.io.reader import raw_samples, shard_rels
from datagen.io.shards import DatasetWriter
from datagen.io.storage import Location
from datagen.models.provenance import weights_revision
from datagen.io.synthetic import make_sample
from datagen.train.data import ShardStream, bucketed
from datagen.train.encode import encode_dataset
from datagen.train.encoders import FrozenEncoders, encode_batch
from datagen.train.preencoded import BASE, CONTEXT, LATENTS, npy_tensor, read_encoding
from datagen.train.train import run
from tests.train.conftest import tiny_config, write_dataset

REPO = Path(__file__).resolve().parents[2]


def _encode(cfg, dataset: str, out: str, batch_size: int = 4):
    return encode_dataset(dataset, out, cfg.model.text_encoder, cfg.model.vae, cfg.data, cfg.precision, cfg.device,
                          batch_size)


def _sidecar_samples(out: str) -> dict[str, dict]:
    loc = Location.parse(out)
    return {s["__key__"]: s for s in raw_samples([loc.url_of(r) for r in shard_rels(loc)])}


def test_encoded_latents_equal_encode_batch(tmp_path, tiny_models):
    """Each stored sample equals encode_batch on that sample alone, at its bucket (two buckets, every image kind,
    0 to 2 inputs), and encoding.json names the encoders' revisions."""
    ds = write_dataset(tmp_path / "ds", {t: 2 for t in range(9)}, samples_per_shard=3)
    with DatasetWriter(ds) as w:  # wide samples of other videos: the second bucket
        for tid, pair in ((1, 0), (1, 1), (1, 2), (4, 0), (4, 1)):
            w.add(make_sample(tid, "wide", pair=pair, width=64, height=32))
    cfg = tiny_config(tmp_path / "run", tiny_models, ds)
    cfg.data.buckets_px = [[32, 32], [32, 64]]
    out = str(tmp_path / "lat")
    summary = _encode(cfg, ds, out, batch_size=3)
    assert summary.samples == 23 and summary.shards_skipped == 0 and summary.samples_dropped == 0

    encoding = read_encoding(Location.parse(out))
    assert encoding.text_encoder_revision == weights_revision(tiny_models[0]) != "unknown"
    assert encoding.vae_revision == weights_revision(tiny_models[1]) and encoding.buckets_px == [[32, 32], [32, 64]]
    stored = _sidecar_samples(out)
    enc = FrozenEncoders(*tiny_models, torch.device("cpu"), torch.float32)
    stream = ShardStream(cfg.data, cfg.model.text_encoder)  # the trainer's raw loader, one sample at a time
    src = Location.parse(ds)
    raws = list(raw_samples([src.url_of(r) for r in shard_rels(src)]))
    assert sorted(stored) == sorted(r["__key__"] for r in raws)  # every key once
    widths = set()
    for raw in raws:
        [(bucket, group)] = list(bucketed(iter([raw]), stream.buckets, 1))
        batch = stream._collate(bucket, group)
        ref = encode_batch(enc, batch)
        got = stored[raw["__key__"]]
        latents = npy_tensor(got[LATENTS])
        assert latents.shape == ref["latents"][0].shape
        assert (latents - ref["latents"][0]).abs().max() < 1e-5, raw["__key__"]
        text = torch.cat([npy_tensor(got[BASE]), npy_tensor(got[CONTEXT])])
        assert (text - ref["text"][0]).abs().max() < 1e-5
        assert got["json"] == raw["json"]
        widths.add(latents.shape[-1])
    assert widths == {32 // enc.down_px, 64 // enc.down_px}  # both buckets were exercised


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_training_on_pre_encoded_equals_raw(tmp_path, tiny_models, monkeypatch):
    """Same seed, same data: the same loss curve, and neither encoder runs (the VAE decodes the preview)."""
    ds = write_dataset(tmp_path / "ds", {0: 4, 1: 6, 6: 4}, samples_per_shard=3)
    out = str(tmp_path / "lat")
    raw_cfg = tiny_config(tmp_path / "raw", tiny_models, ds, steps=4)
    # a buffer smaller than one sample: both streams yield in shard order (raw and sidecar samples differ in bytes,
    # so a real buffer would shuffle them differently)
    raw_cfg.data.shuffle_buffer_mb = 1e-6
    _encode(raw_cfg, ds, out)
    run(raw_cfg)
    pre_cfg = tiny_config(tmp_path / "pre", tiny_models, ds, steps=4)
    pre_cfg.data.shuffle_buffer_mb = 1e-6
    pre_cfg.data.latents = [out]
    pre_cfg.sample.every_steps = 4  # a preview at the last step: the VAE decoder is all it needs

    def no_encoder(*args, **kwargs):
        raise AssertionError("an encoder ran on pre-encoded data")

    monkeypatch.setattr(FrozenEncoders, "encode_images", no_encoder)
    monkeypatch.setattr(FrozenEncoders, "encode_text", no_encoder)
    run(pre_cfg)
    raw_losses, pre_losses = _losses(tmp_path / "raw"), _losses(tmp_path / "pre")
    assert len(pre_losses) == 4 and len(set(raw_losses)) > 1
    assert pre_losses == pytest.approx(raw_losses, rel=1e-5)
    assert (tmp_path / "pre" / "samples" / "step_00000004.png").stat().st_size > 0


def test_trainer_refuses_other_encoders_or_buckets(tmp_path, tiny_models):
    from datagen.train.tiny import build_tiny_vae

    ds = write_dataset(tmp_path / "ds", {1: 2})
    out = str(tmp_path / "lat")
    cfg = tiny_config(tmp_path / "run", tiny_models, ds, steps=1)
    _encode(cfg, ds, out)
    cfg.data.latents = [out]
    cfg.data.buckets_px = [[32, 32], [32, 64]]
    with pytest.raises(UserError, match=r"encoded differently .*buckets_px"):
        run(cfg)
    cfg.data.buckets_px = [[32, 32]]
    cfg.model.vae = build_tiny_vae(tmp_path / "vae8", latent_channels=8)
    with pytest.raises(UserError, match=r"encoded differently .*vae"):
        run(cfg)
    write_dataset(tmp_path / "ds", {4: 2})  # a shard the sidecar lacks
    cfg.model.vae = tiny_models[1]
    with pytest.raises(UserError, match=r"lacks 1 shard"):
        run(cfg)


def _write_config(path: Path, cfg) -> Path:
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return path


def test_not_a_dataset_is_one_clear_error(tmp_path, tiny_models):
    from datagen.cli import app

    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not shards")
    cfg = _write_config(tmp_path / "train.yaml", tiny_config(tmp_path / "run", tiny_models, str(tmp_path / "notes")))
    result = CliRunner().invoke(app, ["encode", str(tmp_path / "notes"), "--out", str(tmp_path / "lat"),
                                      "--config", str(cfg)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "is not a datagen dataset" in lines[0] and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["encode", str(tmp_path / "nothing"), "--out", str(tmp_path / "lat"),
                                      "--config", str(cfg)])
    assert result.exit_code == 2 and "not found" in result.output


def test_encode_resumes_after_sigkill(tmp_path, tiny_models):
    """Kill a real `datagen encode` while it waits on its last source shard (a FIFO nobody writes: the process
    is provably mid-run, with that shard's output staged); the rerun encodes only what is missing, every key once."""
    ds = write_dataset(tmp_path / "ds", {1: 6}, samples_per_shard=1)
    src = Location.parse(ds)
    rels = shard_rels(src)
    assert len(rels) == 6
    last = tmp_path / "ds" / rels[-1]
    held = last.read_bytes()
    last.unlink()
    os.mkfifo(last)
    out = tmp_path / "lat"
    cfg = _write_config(tmp_path / "train.yaml", tiny_config(tmp_path / "run", tiny_models, ds))
    cmd = [sys.executable, "-m", "datagen", "encode", ds, "--out", str(out), "--config", str(cfg), "--batch-size", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    committed, staged = out / rels[-2], None
    deadline = time.monotonic() + 120
    while staged is None:  # state, not time: the fifth shard is committed and the sixth is staged
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "encode never reached the last shard"
        tmp = list((out / rels[-1]).parent.glob(Path(rels[-1]).name + ".tmp-*"))
        staged = tmp[0] if committed.exists() and tmp else None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {r: (out / r).stat().st_mtime_ns for r in rels[:-1]}
    assert not (out / rels[-1]).exists() and staged.exists()

    last.unlink()
    last.write_bytes(held)
    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "encoded 1 shards (1 samples), 5 already done" in rerun.stderr
    assert {r: (out / r).stat().st_mtime_ns for r in rels[:-1]} == done_before  # finished shards not redone
    assert not list(out.rglob("*.tmp-*"))  # the killed run's partial shard is gone
    loc = Location.parse(str(out))
    keys = [s["__key__"] for s in raw_samples([loc.url_of(r) for r in shard_rels(loc)])]
    source_keys = [s["__key__"] for s in raw_samples([src.url_of(r) for r in rels])]
    assert sorted(keys) == sorted(source_keys) and len(set(keys)) == 6
