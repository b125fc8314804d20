"""Stream the shards into batches: split by rank and worker, resample, mix tasks, shuffle, bucket, decode.

Each (rank, data worker) reads its own slice of every task's shards (disjoint when there are at
least ranks x workers shards) and draws shards with replacement (`resampled`, WebDataset's multi-node
rule). Tasks are mixed by configured weights into ONE shuffle buffer per worker, bounded in bytes
(`shuffle_buffer_mb` per rank, split over its workers): host memory is set by the config, not by the
number of tasks. Samples are grouped by (aspect-ratio bucket, frame count) from their JSON alone, so a
batch has no padded frames and skipping batches on resume costs no image decoding.

Batch i of an epoch comes from round-robin stream i % workers, a function of (seed, epoch, rank,
stream). One loader serves the whole run: its workers walk from epoch to epoch themselves (no restart,
no tokenizer reload), and resuming at step s replays epoch s // epoch_batches from its start, skipping
s % epoch_batches batches.

With `data.latents` (sidecars of `datagen encode`, see datagen/train/preencoded.py) the same stream reads the
sidecar shards instead: same shard names, keys and order, but latents and text states in place of images, so
a batch carries `latents`, `base_states` and `context_states` and the trainer skips the encoders.
"""
from __future__ import annotations

import math
import os
import random
import warnings
from dataclasses import dataclass, field
from itertools import count
from typing import Iterator, Literal

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
from datagen.train.prefetch import prefetched
from datagen.train.preencoded import BASE, CONTEXT, LATENTS, npy_tensor, sidecar_pairs
from schemas.sample import SampleRecord
from schemas.tasks import TASKS, ImageKind, task as task_spec


@dataclass
class DataConfig:
    datasets: list[str] = field(default_factory=list)  # dataset dirs or URLs (the --output of `datagen run`)
    # pre-encoded sidecars (the --out of `datagen encode`), one per dataset in the same order; empty: encode every
    # step. When set, the loader reads only these (latents and text states, no images) and the encoders stay off
    latents: list[str] = field(default_factory=list)
    task_weights: dict[str, float] = field(default_factory=dict)  # task name or id -> weight; empty: all found, equal
    buckets_px: list[list[int]] = field(default_factory=lambda: [[256, 256]])  # [height, width]; one = fixed size
    batch_size: int = 8  # per GPU
    num_workers: int = 4  # per GPU; shards >= nodes x GPUs x workers keeps every reader on its own shards
    # raw sample bytes one rank's shuffle buffers hold, all tasks and workers together: the loader's host memory
    # is set here (per-task buffers of 1000 samples were 100+ GB a node with 9 tasks x 8 workers x 8 GPUs)
    shuffle_buffer_mb: float = 512.0
    prefetch_batches: int = 2  # decoded batches queued per worker: enough to hide decode jitter, each one is RAM
    epoch_batches: int = 1000  # batches per rank between re-seeded epochs (the unit of exact resume); a multiple of num_workers
    resampled: bool = True  # draw shards with replacement: endless, balanced streams on any number of nodes
    max_base_tokens: int = 128
    max_context_tokens: int = 64
    # attend: prompts padded to the max lengths and attended in full (SD3, Flux), so batches have no padding and
    # attention runs without a mask (FlashAttention); mask: padded to the batch's longest, padding masked out
    text_padding: Literal["attend", "mask"] = "attend"
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


def tokenize(tokenizer, texts: list[str], max_tokens: int, fixed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and the real-token mask the text encoder takes; `fixed` pads to max_tokens (text_padding: attend)."""
    # "longest" lengths rounded up to 16 (when the cap allows): few distinct shapes, so torch.compile settles quickly
    enc = tokenizer(texts, max_length=max_tokens, truncation=True, padding="max_length" if fixed else "longest",
                    pad_to_multiple_of=16 if max_tokens % 16 == 0 and not fixed else None, return_tensors="pt")
    return enc.input_ids, enc.attention_mask.bool()


def sample_bytes(raw: dict) -> int:
    """Bytes a raw sample holds: its members' payloads (keys and URLs are noise next to images)."""
    return sum(len(v) for v in raw.values() if isinstance(v, (bytes, bytearray)))


def shuffled(samples: Iterator[dict], budget_bytes: float, rng: random.Random) -> Iterator[dict]:
    """Shuffle through a buffer that holds at most `budget_bytes` of raw samples (plus the one just read).

    Fills to the budget, then hands out a random buffered sample for every one read; the rest, shuffled,
    when the input ends."""
    buf: list[tuple[dict, int]] = []
    held = 0
    for raw in samples:
        size = sample_bytes(raw)
        buf.append((raw, size))
        held += size
        while held > budget_bytes and buf:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            out, out_size = buf.pop()
            held -= out_size
            yield out
    rng.shuffle(buf)
    yield from (raw for raw, _ in buf)


def frames_batch(frames: list[list[tuple[torch.Tensor, int]]], task_ids: list[int], key: str = "pixels",
                 dtype: torch.dtype = torch.float16) -> dict:
    """Per sample [(frame, role index), ...] with the target last -> padded frame tensors under `key`.

    Frames are pixels [3,H,W] (float16: half the bytes through worker queues) or pre-encoded latents [C,h,w]."""
    n, f = len(frames), max(len(s) for s in frames)
    frame_shape = frames[0][0][0].shape
    stacked = torch.zeros(n, f, *frame_shape, dtype=dtype)
    role = torch.zeros(n, f, dtype=torch.long)
    cond = torch.zeros(n, f, dtype=torch.bool)
    valid = torch.zeros(n, f, dtype=torch.bool)
    for i, sample in enumerate(frames):
        for j, (px, r) in enumerate(sample):
            stacked[i, j], role[i, j], valid[i, j] = px, r, True
            cond[i, j] = j < len(sample) - 1
    return {key: stacked, "frame_role": role, "frame_cond": cond, "frame_valid": valid,
            "task": torch.tensor(task_ids, dtype=torch.long)}


def bucketed(raws: Iterator[dict], buckets: list[tuple[int, int]], batch_size: int) -> Iterator[tuple[int, list[dict]]]:
    """Group raw samples by (bucket, frame count) from their JSON alone; leftovers at the end of a finite input."""
    pending: dict[tuple[int, int], list[dict]] = {}
    for raw in raws:
        try:
            rec = SampleRecord.from_json(raw["json"])
        except (KeyError, ValueError, TypeError) as e:
            warnings.warn(f"skipping sample {raw.get('__key__')!r} with an unreadable record: {e}")
            continue
        raw["record"] = rec
        # one frame count per batch: no padded frames, so attention needs no mask (see model.forward)
        b = (nearest_bucket(buckets, rec.target.width, rec.target.height), len(rec.prompt.images) + 1)
        group = pending.setdefault(b, [])
        group.append(raw)
        if len(group) == batch_size:
            yield b[0], pending.pop(b)
    for b, group in pending.items():  # only reached by one-pass streams: no sample is lost
        yield b[0], group


def sample_frames(raw: dict, size_hw: tuple[int, int], pre_encoded: bool) -> list[tuple[torch.Tensor, int]]:
    """One sample's frames (inputs in role order, then the target) with their role indices: decoded and
    resized pixels, or the latents `datagen encode` stored (see datagen/train/preencoded.py)."""
    rec = raw["record"]
    refs = [*rec.prompt.images, rec.target]
    roles = [ROLE_INDEX[r.role] for r in refs]
    if pre_encoded:
        latents = npy_tensor(raw[LATENTS])
        if latents.shape[0] != len(refs):
            raise ValueError(f"{latents.shape[0]} pre-encoded frames for {len(refs)} images")
        return list(zip(latents.float(), roles))
    sample = to_sample(raw)
    return [(image_to_tensor(decode_image(sample.media[r.member], r.kind), r.kind, size_hw), role)
            for r, role in zip(refs, roles)]


def collate(raws: list[dict], size_hw: tuple[int, int], tokenizer, cfg: DataConfig, fixed: bool,
            pre_encoded: bool = False) -> dict | None:
    """Raw samples of one bucket -> a loader batch: frames (pixels, or latents when pre-encoded), prompt tokens
    (`fixed`: padded to the max lengths) and, when pre-encoded, the prompts' text-encoder states cut to them.

    A sample whose images cannot be decoded is skipped with a warning; None when none is left."""
    frames, tasks, base, context, keys, states = [], [], [], [], [], []
    for raw in raws:
        rec = raw["record"]
        try:
            sample = sample_frames(raw, size_hw, pre_encoded)
            if pre_encoded:
                states.append((npy_tensor(raw[BASE]), npy_tensor(raw[CONTEXT])))
        except (KeyError, OSError, ValueError) as e:
            warnings.warn(f"skipping sample {rec.key!r}: cannot decode its images: {e}")
            continue
        frames.append(sample)
        tasks.append(rec.task_id)
        base.append(rec.prompt.base)
        context.append(rec.prompt.context)
        keys.append(rec.key)
    if not frames:
        return None
    if pre_encoded:
        batch = frames_batch(frames, tasks, key="latents", dtype=torch.float32)
    else:
        batch = frames_batch(frames, tasks)
    batch["base_ids"], batch["base_mask"] = tokenize(tokenizer, base, cfg.max_base_tokens, fixed)
    batch["context_ids"], batch["context_mask"] = tokenize(tokenizer, context, cfg.max_context_tokens, fixed)
    if pre_encoded:
        # stored at the fixed lengths; a masked layout pads to the batch's longest prompt, a prefix of them
        batch["base_states"] = torch.stack([b for b, _ in states])[:, :batch["base_ids"].shape[1]]
        batch["context_states"] = torch.stack([c for _, c in states])[:, :batch["context_ids"].shape[1]]
    batch["text_attend"] = fixed
    batch["keys"] = keys
    return batch


class ShardStream(IterableDataset):
    """Endless (resampled) or one-pass stream of decoded, bucketed batches of one rank."""

    def __init__(self, cfg: DataConfig, text_encoder: str):
        self.cfg, self.text_encoder = cfg, text_encoder
        self.buckets = [tuple(b) for b in cfg.buckets_px]
        if not self.buckets or any(len(b) != 2 for b in self.buckets):
            raise UserError("data.buckets_px: give a list of [height, width] pairs, e.g. [[256, 256]]")
        if cfg.shuffle_buffer_mb <= 0:
            raise UserError(f"data.shuffle_buffer_mb must be > 0 (got {cfg.shuffle_buffer_mb})")
        self.urls, self.weights = self._find_shards()
        # where the stream starts, pickled into the workers: epoch, batches of it already done, and the epoch
        # length (None: a single pass, or an endless single epoch when resampled)
        self.epoch, self.skip_batches, self.epoch_batches = 0, 0, None
        self.position = {"epoch": 0, "batches_into_epoch": 0}  # batches handed to training so far
        from datagen.train.encoders import load_tokenizer

        # loaded here, before the workers fork: they share its pages and skip importing transformers each
        self._tokenizer = load_tokenizer(text_encoder)

    def _find_shards(self) -> tuple[dict[int, list[str]], dict[int, float]]:
        if not self.cfg.datasets:
            raise UserError("data.datasets is empty; list the dataset directories (the --output of datagen run)")
        wanted = {task_spec(k).id: float(v) for k, v in self.cfg.task_weights.items()} or None
        if self.cfg.latents:
            sidecar_pairs(self.cfg)  # one sidecar per dataset
        urls: dict[int, list[str]] = {}
        for ds in self.cfg.latents or self.cfg.datasets:  # a sidecar has the dataset's shard layout and keys
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
        """One task's samples in shard order (shards drawn at random); shuffled later, mixed with the others."""
        def shards():
            if self.cfg.resampled:
                while True:
                    yield {"url": rng.choice(urls)}
            order = list(urls)
            rng.shuffle(order)
            yield from ({"url": u} for u in order)

        return wds.tarfile_to_samples(handler=wds.warn_and_continue)(shards())

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

    def _shuffled(self, rank: int, world: int, worker: int, workers: int, rng: random.Random) -> Iterator[dict]:
        budget = self.cfg.shuffle_buffer_mb * 1e6 / workers
        return shuffled(self._mixed(rank, world, worker, workers, rng), budget, random.Random(rng.random()))

    def _collate(self, bucket: int, raws: list[dict]) -> dict | None:
        return collate(raws, self.buckets[bucket], self._tokenizer, self.cfg, self.cfg.text_padding == "attend",
                       pre_encoded=bool(self.cfg.latents))

    def __iter__(self) -> Iterator[dict]:
        rank, world, worker, workers = reader_slot()
        # the loader takes workers round-robin from the first batch it serves: worker w continues the epoch's
        # stream (skip + w) % workers, and keeps that stream in later epochs (epoch_batches % workers == 0)
        stream = (self.skip_batches + worker) % workers
        skip = skipped_by_worker(self.skip_batches, stream, workers)
        for epoch in count(self.epoch):
            rng = random.Random(f"{self.cfg.seed}/{epoch}/{rank}/{stream}")
            quota = None if self.epoch_batches is None else skipped_by_worker(self.epoch_batches, stream, workers)
            groups = bucketed(self._shuffled(rank, world, stream, workers, rng), self.buckets, self.cfg.batch_size)
            for i, (bucket, raws) in enumerate(groups):
                if quota is not None and i >= quota:
                    break
                if i < skip:
                    continue
                batch = self._collate(bucket, raws)
                if batch is not None:  # None only when every sample of the group fails to decode (warned above)
                    yield batch
            skip = 0
            if self.epoch_batches is None:
                return


def make_loader(stream: ShardStream, cfg: DataConfig, pin_memory: bool):
    """One loader for the whole run (workers never restart); endless when the stream is resampled."""
    return wds.WebLoader(stream, batch_size=None, num_workers=cfg.num_workers, pin_memory=pin_memory,
                         prefetch_factor=cfg.prefetch_batches if cfg.num_workers else None)


def train_batches(stream: ShardStream, cfg: DataConfig, position: dict, pin_memory: bool) -> Iterator[dict]:
    """Endless batches from a saved `stream_position` on; epoch e is seeded by e, so a resumed run sees the
    same data. Keeps `stream.position` (the data state of checkpoints) current."""
    if not cfg.resampled:
        raise UserError("training needs data.resampled: true (an endless stream counted in steps)")
    if cfg.epoch_batches % max(1, cfg.num_workers):
        raise UserError(f"data.epoch_batches ({cfg.epoch_batches}) must be a multiple of data.num_workers "
                        f"({cfg.num_workers}): each worker serves the same share of every epoch")
    epoch, done = position["epoch"], position["batches_into_epoch"]
    stream.epoch, stream.skip_batches, stream.epoch_batches = epoch, done, cfg.epoch_batches
    loader = make_loader(stream, cfg, pin_memory)
    for batch in loader if pin_memory else prefetched(loader):  # pinning has a receiving thread already
        done += 1
        if done == cfg.epoch_batches:
            epoch, done = epoch + 1, 0
        stream.position = {"epoch": epoch, "batches_into_epoch": done}
        yield batch
