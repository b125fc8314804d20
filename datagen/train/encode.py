"""`datagen encode`: run the trainer's frozen encoders once over a dataset, into sidecar shards.

It takes the training config itself (encoders, buckets, prompt lengths, precision), so what it stores is what
`encode_batch` computes in a training step: the same loader code (`bucketed`, `collate`) builds the batches
and the same `encode_batch` encodes them. Layout and the trainer's checks: datagen/train/preencoded.py.

Resume: each sidecar shard is staged and renamed when complete; a rerun of the same command skips the shards
already there (and new shards a resumed `datagen run` added get encoded). One encode per output at a time.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import Callable

import torch

from datagen import UserError
from datagen.io.reader import raw_samples, shard_rels
from datagen.io.shards import SHARDS_DIR, add_tar_member
from datagen.io.storage import Location
from datagen.train.data import DataConfig, bucketed, collate
from datagen.train.encoders import FrozenEncoders, encode_batch, encoder_dtype, load_tokenizer
from datagen.train.preencoded import (BASE, CONTEXT, ENCODING_FILE, LATENTS, NULL_TEXT_FILE, encoding_for, npy_bytes,
                                      read_encoding)

DEFAULT_BATCH_SIZE = 32  # samples per encoder call: fills a GPU at 256 px; one shard's outputs wait in RAM anyway


@dataclass
class EncodeSummary:
    shards_encoded: int
    shards_skipped: int  # already complete from an earlier run
    samples: int
    samples_dropped: int  # images that cannot be decoded: the raw loader skips them too


def _device(choice: str) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for but no GPU is visible; use --set device=cpu")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


def source_shards(dataset: str) -> tuple[Location, list[str]]:
    src = Location.dataset(dataset)
    rels = shard_rels(src)
    if not rels:
        raise UserError(f"{dataset!r} is not a datagen dataset (no {SHARDS_DIR}/<task>/*.tar in it); pass the "
                        f"--output directory of `datagen run` or `datagen demo`")
    return src, rels


def _output(out: str, src: Location) -> Location:
    dst = Location.parse(out)
    if dst.fs.unstrip_protocol(dst.root) == src.fs.unstrip_protocol(src.root):
        raise UserError(f"--out {out!r} is the dataset itself; give a new directory, e.g. {src.url}_latents")
    if dst.exists(SHARDS_DIR) and not dst.exists(ENCODING_FILE):
        raise UserError(f"--out {out!r} already holds shards but no {ENCODING_FILE} (a dataset?); give a new directory")
    dst.makedirs()
    return dst


def encode_dataset(dataset: str, out: str, model_text_encoder: str, model_vae: str, data: DataConfig,
                   precision: str = "fp32", device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE,
                   progress: Callable[[int, int], None] | None = None) -> EncodeSummary:
    """Encode every shard of `dataset` not yet in `out` (see the module docstring)."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {batch_size})")
    src, rels = source_shards(dataset)
    dst = _output(out, src)
    dev = _device(device)
    enc = FrozenEncoders(model_text_encoder, model_vae, dev, encoder_dtype(precision, dev))
    expected = encoding_for(model_text_encoder, model_vae, data, enc, source=src.url)
    found = read_encoding(dst)
    if found is None:
        dst.write_bytes(ENCODING_FILE, expected.to_json())  # first: a shard is never there without its provenance
    elif diff := found.mismatch(expected, same_dtype=True):
        raise UserError(f"--out {out!r} holds an encoding made differently ({diff}); give a new directory")
    # the empty prompt at the fixed lengths: what guidance dropout puts in under attended padding
    null = enc.null_text(data.max_base_tokens, data.max_context_tokens)[0]
    if not dst.exists(NULL_TEXT_FILE):
        dst.write_bytes(NULL_TEXT_FILE, npy_bytes(null))
    for stale in dst.glob(f"{SHARDS_DIR}/*/*.tar.tmp-*"):  # a killed run's partial shards (local disks only)
        dst.remove(stale)
    tokenizer = load_tokenizer(model_text_encoder)
    # bf16 states are exact in float16 (fewer exponent bits only matter past 65504); fp32 ones stay fp32
    store = torch.float32 if enc.dtype == torch.float32 else torch.float16
    summary = EncodeSummary(0, 0, 0, 0)
    for i, rel in enumerate(rels):
        if dst.exists(rel):
            summary.shards_skipped += 1
        else:
            kept, dropped = encode_shard(src, dst, rel, enc, tokenizer, data, batch_size, store)
            summary.shards_encoded += 1
            summary.samples += kept
            summary.samples_dropped += dropped
        if progress:
            progress(i + 1, len(rels))
    return summary


def encode_shard(src: Location, dst: Location, rel: str, enc: FrozenEncoders, tokenizer, data: DataConfig,
                 batch_size: int, store: torch.dtype) -> tuple[int, int]:
    """One source shard -> its sidecar at the same relative path, samples in the source's order (a stream over
    the sidecar then draws the same sequence as over the dataset). Returns (samples kept, dropped)."""
    staged = dst.stage(rel)  # staged before reading: a kill at any point leaves no file under the final name
    try:
        order: list[tuple[str, bytes]] = []

        def recorded(raws):
            for raw in raws:
                order.append((raw["__key__"], raw.get("json", b"")))
                yield raw

        buckets = [tuple(b) for b in data.buckets_px]
        encoded: dict[str, dict[str, bytes]] = {}
        nb = data.max_base_tokens
        for bucket, group in bucketed(recorded(raw_samples([src.url_of(rel)])), buckets, batch_size):
            # prompts at the fixed lengths: text_padding "attend" uses them whole, "mask" a prefix of them
            batch = collate(group, buckets[bucket], tokenizer, data, fixed=True)
            if batch is None:
                continue
            inputs = encode_batch(enc, batch)
            for j, key in enumerate(batch["keys"]):
                frames = int(batch["frame_valid"][j].sum())
                encoded[key] = {LATENTS: npy_bytes(inputs["latents"][j, :frames]),
                                BASE: npy_bytes(inputs["text"][j, :nb].to(store)),
                                CONTEXT: npy_bytes(inputs["text"][j, nb:].to(store))}
        with tarfile.open(fileobj=staged.file, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for key, record in order:
                if key in encoded:
                    add_tar_member(tar, f"{key}.json", record)
                    for member, payload in encoded[key].items():
                        add_tar_member(tar, f"{key}.{member}", payload)
        staged.commit()
    except BaseException:
        staged.abort()
        raise
    return len(encoded), len(order) - len(encoded)
