"""Stream the shards into batches: split by rank and worker, resample, shuffle, mix tasks, bucket, decode.

Each (rank, data worker) reads its own slice of every task's shards (disjoint when there are at
least ranks x workers shards), draws shards with replacement (`resampled`, WebDataset's multi-node
rule) and shuffles samples in a buffer. Tasks are mixed by configured weights. Samples are grouped by
aspect-ratio bucket from their JSON alone, so skipping batches on resume costs no image decoding.
The stream is a function of (seed, epoch, rank, worker): resuming at step s replays epoch
s // epoch_batches and skips its first s % epoch_batches batches.
"""
from __future__ import annotations

import math
import os
import random
import warnings
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from datagen import UserError
from datagen.io.reader import shard_urls, to_sample
from datagen.io.storage import Location
from datagen.media import decode_image
from datagen.train.model import ROLE_INDEX
from schemas.sample import SampleRecord
from schemas.tasks import TASKS, ImageKind, task as task_spec


@dataclass
class DataConfig:
    datasets: list[str] = field(default_factory=list)  # dataset dirs or URLs (the --output of `datagen run`)
    task_weights: dict[str, float] = field(default_factory=dict)  # task name or id -> weight; empty: all found, equal
    buckets_px: list[list[int]] = field(default_factory=lambda: [[256, 256]])  # [height, width]; one = fixed size
    batch_size: int = 8  # per GPU
    num_workers: int = 4  # per GPU; shards >= nodes x GPUs x workers keeps every reader on its own shards
    shuffle_buffer: int = 1000  # samples; about one shard, so consecutive samples rarely share a video
    epoch_batches: int = 1000  # the loader's epoch length: batches per rank between re-seeded epochs
    resampled: bool = True  # draw shards with replacement: endless, balanced streams on any number of nodes
    max_base_tokens: int = 128
    max_context_tokens: int = 64
    seed: int = 0


def reader_slot() -> tuple[int, int, int, int]:
    """(rank, world size, data worker, workers) of the calling process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    info = get_worker_info()
    return rank, world, (info.id if info else 0), (info.num_workers if info else 1)


def split_shards(urls: list[str], rank: int, world: int, worker: int, workers: int) -> list[str]:
    """This reader's shards: every (rank, worker) gets a disjoint slice, node-major."""
    return urls[rank * workers + worker:: world * workers]


def skipped_by_worker(batches: int, worker: int, workers: int) -> int:
    """How many of the loader's first `batches` came from `worker` (the loader takes workers round-robin)."""
    return max(0, math.ceil((batches - worker) / workers))


def image_to_tensor(array: np.ndarray, kind: ImageKind, size_hw: tuple[int, int]) -> torch.Tensor:
    """Decoded member -> [3,H,W] float in [-1,1], resized to cover size_hw and centre-cropped.

    Control and label maps (depth, edge, mask) become 3-channel images so the same VAE encodes them.
    """
    if kind is ImageKind.rgb:
        x = torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / 127.5 - 1  # a copy: decoded arrays are read-only
    else:
        peak = 65535.0 if kind is ImageKind.depth16 else 255.0
        x = (torch.from_numpy(array.astype(np.float32)) / peak * 2 - 1)[None].expand(3, -1, -1)
    h, w = size_hw
    scale = max(h / x.shape[1], w / x.shape[2])
    new = (max(h, round(x.shape[1] * scale)), max(w, round(x.shape[2] * scale)))
    if new != tuple(x.shape[1:]):
        x = F.interpolate(x[None], size=new, mode="bilinear", antialias=True, align_corners=False)[0]
    top, left = (new[0] - h) // 2, (new[1] - w) // 2
    return x[:, top:top + h, left:left + w].clamp(-1, 1)


def tensor_to_image(x: torch.Tensor, kind: ImageKind) -> np.ndarray:
    """Inverse of image_to_tensor for a generated frame: what `datagen.media.encode_image` takes."""
    x = ((x.float().clamp(-1, 1) + 1) / 2).cpu()
    if kind is ImageKind.rgb:
        return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    gray = x.mean(0).numpy()
    if kind is ImageKind.depth16:
        return (gray * 65535).round().astype(np.uint16)
    return ((gray > 0.5) * 255).astype(np.uint8)


def nearest_bucket(buckets: list[tuple[int, int]], width: int, height: int) -> int:
    """Index of the bucket closest in log aspect ratio."""
    ar = math.log(width / height)
    return min(range(len(buckets)), key=lambda i: abs(math.log(buckets[i][1] / buckets[i][0]) - ar))


def tokenize(tokenizer, texts: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    # lengths rounded up to 16 (when the cap allows): few distinct shapes, so torch.compile settles quickly
    enc = tokenizer(texts, max_length=max_tokens, truncation=True, padding="longest",
                    pad_to_multiple_of=16 if max_tokens % 16 == 0 else None, return_tensors="pt")
    return enc.input_ids, enc.attention_mask.bool()


def frames_batch(frames: list[list[tuple[torch.Tensor, int]]], task_ids: list[int]) -> dict:
    """Per sample [(pixels, role index), ...] with the target last -> padded frame tensors."""
    n, f = len(frames), max(len(s) for s in frames)
    h, w = frames[0][0][0].shape[1:]
    pixels = torch.zeros(n, f, 3, h, w, dtype=torch.float16)  # half the bytes through worker queues
    role = torch.zeros(n, f, dtype=torch.long)
    cond = torch.zeros(n, f, dtype=torch.bool)
    valid = torch.zeros(n, f, dtype=torch.bool)
    for i, sample in enumerate(frames):
        for j, (px, r) in enumerate(sample):
            pixels[i, j], role[i, j], valid[i, j] = px, r, True
            cond[i, j] = j < len(sample) - 1
    return {"pixels": pixels, "frame_role": role, "frame_cond": cond, "frame_valid": valid,
            "task": torch.tensor(task_ids, dtype=torch.long)}


class ShardStream(IterableDataset):
    """Endless (resampled) or one-pass stream of decoded, bucketed batches of one rank."""

    def __init__(self, cfg: DataConfig, text_encoder: str):
        self.cfg, self.text_encoder = cfg, text_encoder
        self.buckets = [tuple(b) for b in cfg.buckets_px]
        if not self.buckets or any(len(b) != 2 for b in self.buckets):
            raise UserError("data.buckets_px: give a list of [height, width] pairs, e.g. [[256, 256]]")
        self.urls, self.weights = self._find_shards()
        self.epoch, self.skip_batches = 0, 0  # set before each loader epoch; pickled into workers
        self.position = {"epoch": 0, "batches_into_epoch": 0}  # batches handed to training so far
        self._tokenizer = None

    def _find_shards(self) -> tuple[dict[int, list[str]], dict[int, float]]:
        if not self.cfg.datasets:
            raise UserError("data.datasets is empty; list the dataset directories (the --output of datagen run)")
        wanted = {task_spec(k).id: float(v) for k, v in self.cfg.task_weights.items()} or None
        urls: dict[int, list[str]] = {}
        for ds in self.cfg.datasets:
            loc = Location.parse(ds)
            for tid in (wanted or [t.id for t in TASKS]):
                found = shard_urls(loc, [tid])
                if found:
                    urls.setdefault(tid, []).extend(found)
        if not urls:
            raise UserError(f"no shards found under {self.cfg.datasets} for tasks {sorted(wanted or [])}")
        missing = sorted(set(wanted or {}) - set(urls))
        if missing:
            raise UserError(f"data.task_weights names tasks {missing} that have no shards in {self.cfg.datasets}")
        weights = {t: (wanted[t] if wanted else 1.0) for t in urls}
        return urls, weights

    def _task_samples(self, urls: list[str], rng: random.Random) -> Iterator[dict]:
        def shards():
            if self.cfg.resampled:
                while True:
                    yield {"url": rng.choice(urls)}
            order = list(urls)
            rng.shuffle(order)
            yield from ({"url": u} for u in order)

        samples = wds.tarfile_to_samples(handler=wds.warn_and_continue)(shards())
        return wds.shuffle(self.cfg.shuffle_buffer, initial=self.cfg.shuffle_buffer,
                           rng=random.Random(rng.random()))(samples)

    def _mixed(self, rank: int, world: int, worker: int, workers: int, rng: random.Random) -> Iterator[dict]:
        streams = {}
        for tid, urls in self.urls.items():
            mine = split_shards(urls, rank, world, worker, workers)
            if not mine and self.cfg.resampled:
                mine = urls  # fewer shards than readers: each reader resamples all of them, with its own seed
            if mine:
                streams[tid] = self._task_samples(mine, random.Random(rng.random()))
        while streams:
            tids = list(streams)
            tid = rng.choices(tids, [self.weights[t] for t in tids])[0]
            try:
                yield next(streams[tid])
            except StopIteration:
                del streams[tid]

    def _bucketed(self, raws: Iterator[dict]) -> Iterator[tuple[int, list[dict]]]:
        pending: dict[int, list[dict]] = {}
        for raw in raws:
            try:
                rec = SampleRecord.from_json(raw["json"])
            except (KeyError, ValueError, TypeError) as e:
                warnings.warn(f"skipping sample {raw.get('__key__')!r} with an unreadable record: {e}")
                continue
            raw["record"] = rec
            b = nearest_bucket(self.buckets, rec.target.width, rec.target.height)
            group = pending.setdefault(b, [])
            group.append(raw)
            if len(group) == self.cfg.batch_size:
                yield b, pending.pop(b)
        for b, group in pending.items():  # only reached by one-pass streams: no sample is lost
            yield b, group

    def _collate(self, bucket: int, raws: list[dict]) -> dict | None:
        size = self.buckets[bucket]
        frames, tasks, base, context, keys = [], [], [], [], []
        for raw in raws:
            rec = raw["record"]
            try:
                sample = to_sample(raw)
                refs = [*rec.prompt.images, rec.target]
                frames.append([(image_to_tensor(decode_image(sample.media[r.member], r.kind), r.kind, size),
                                ROLE_INDEX[r.role]) for r in refs])
            except (KeyError, OSError, ValueError) as e:
                warnings.warn(f"skipping sample {rec.key!r}: cannot decode its images: {e}")
                continue
            tasks.append(rec.task_id)
            base.append(rec.prompt.base)
            context.append(rec.prompt.context)
            keys.append(rec.key)
        if not frames:
            return None
        if self._tokenizer is None:
            from datagen.train.encoders import load_tokenizer

            self._tokenizer = load_tokenizer(self.text_encoder)
        batch = frames_batch(frames, tasks)
        batch["base_ids"], batch["base_mask"] = tokenize(self._tokenizer, base, self.cfg.max_base_tokens)
        batch["context_ids"], batch["context_mask"] = tokenize(self._tokenizer, context, self.cfg.max_context_tokens)
        batch["keys"] = keys
        return batch

    def __iter__(self) -> Iterator[dict]:
        rank, world, worker, workers = reader_slot()
        rng = random.Random(f"{self.cfg.seed}/{self.epoch}/{rank}/{worker}")
        skip = skipped_by_worker(self.skip_batches, worker, workers)
        for i, (bucket, raws) in enumerate(self._bucketed(self._mixed(rank, world, worker, workers, rng))):
            if i < skip:
                continue
            batch = self._collate(bucket, raws)
            if batch is not None:  # None only when every sample of the group fails to decode (warned above)
                yield batch


def make_loader(stream: ShardStream, cfg: DataConfig, pin_memory: bool, epoch_batches: int | None):
    """The loader of one epoch; `epoch_batches` caps an endless stream (WebDataset's epoch length on the loader)."""
    loader = wds.WebLoader(stream, batch_size=None, num_workers=cfg.num_workers, pin_memory=pin_memory,
                           prefetch_factor=4 if cfg.num_workers else None)
    return loader if epoch_batches is None else loader.with_epoch(epoch_batches)


def train_batches(stream: ShardStream, cfg: DataConfig, position: dict, pin_memory: bool) -> Iterator[dict]:
    """Endless batches from a saved `stream_position` on; epoch e is seeded by e, so a resumed run sees the
    same data. Keeps `stream.position` (the data state of checkpoints) current."""
    if not cfg.resampled:
        raise UserError("training needs data.resampled: true (an endless stream counted in steps)")
    epoch, done = position["epoch"], position["batches_into_epoch"]
    while True:
        stream.epoch, stream.skip_batches = epoch, done
        for batch in make_loader(stream, cfg, pin_memory, cfg.epoch_batches - done):
            done += 1
            full = done == cfg.epoch_batches
            stream.position = {"epoch": epoch + full, "batches_into_epoch": 0 if full else done}
            yield batch
        epoch, done = epoch + 1, 0
