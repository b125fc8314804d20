"""The layout of a pre-encoded dataset (`datagen encode`), and the trainer's check that it fits its config.

Sidecar shards, not extra members. `datagen encode DIR --out DIR_latents` writes a second dataset directory:
    encoding.json                  encoders (path/id + revision), buckets, prompt lengths, dtypes; written first
    null_text.npy                  the empty prompt's states [max_base + max_context, D] (attended padding's drop)
    shards/{task}/{name}.tar       one per shard of DIR, same relative path, same keys in the same order:
        {key}.json                 the sample's record, byte for byte (bucketing and prompts need nothing else)
        {key}.latents.npy          [frames, C, h, w] normalised VAE latents: inputs in role order, then the target,
                                   at the sample's bucket (what `encode_batch` computes)
        {key}.base.npy             [max_base_tokens, D] T5 states of the base prompt, padded to the fixed length
        {key}.context.npy          [max_context_tokens, D] the same for the context prompt
Why beside the dataset rather than inside it: the dataset's shards stay as written (byte-identical, so relabel's
byte-for-byte copies, `datagen validate`, Hugging Face `datasets` and read-only buckets all keep working); an
encoding is bound to one pair of encoders and one bucket set, so several can sit beside one dataset and be
deleted without touching it; and the trainer reads only the small sidecar shards, never the image bytes. A
sidecar shard is complete or absent (staged, renamed when done), which is also what resume looks at.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from datagen import UserError
from datagen.io.reader import shard_rels
from datagen.io.storage import Location

ENCODING_FILE, NULL_TEXT_FILE = "encoding.json", "null_text.npy"
LATENTS, BASE, CONTEXT = "latents.npy", "base.npy", "context.npy"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Encoding:
    """What encoding.json records: everything a latent or a text state depends on."""

    text_encoder: str
    text_encoder_revision: str
    vae: str
    vae_revision: str
    buckets_px: list[list[int]]
    max_base_tokens: int
    max_context_tokens: int
    encoder_dtype: str  # the encoders' compute dtype ("float32", "bfloat16"), as the trainer's raw path runs them
    latent_channels: int
    down_px: int
    text_dim: int
    source: str = ""  # the dataset encoded (for people; the trainer pairs shards by relative path)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "Encoding":
        raw = json.loads(data)
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def mismatch(self, other: "Encoding", same_dtype: bool = False) -> str:
        """'' when `other` encodes alike (same weights, buckets, prompt lengths), else what differs.

        The encoders' dtype is provenance, not a mismatch for training (fp32 latents serve a bf16 run), but
        one output directory holds one dtype (`same_dtype`)."""
        diffs = []
        for name in ("text_encoder", "vae"):
            mine, theirs = getattr(self, f"{name}_revision"), getattr(other, f"{name}_revision")
            # a revision names the weights wherever they sit; "unknown" (an uncached hub id) falls back to the id
            if mine != theirs or (mine == "unknown" and getattr(self, name) != getattr(other, name)):
                diffs.append(f"{name} {getattr(self, name)!r}@{mine} vs {getattr(other, name)!r}@{theirs}")
        for name in ("buckets_px", "max_base_tokens", "max_context_tokens", "format_version",
                     *(("encoder_dtype",) if same_dtype else ())):
            if getattr(self, name) != getattr(other, name):
                diffs.append(f"{name} {getattr(self, name)} vs {getattr(other, name)}")
        return "; ".join(diffs)


def encoding_for(text_encoder: str, vae: str, data, enc, source: str = "") -> Encoding:
    """The Encoding that encoders `enc` (a FrozenEncoders of these paths) and DataConfig `data` produce."""
    from datagen.models.provenance import weights_revision

    return Encoding(
        text_encoder=text_encoder, text_encoder_revision=weights_revision(text_encoder, loaded=enc.text),
        vae=vae, vae_revision=weights_revision(vae, loaded=enc.vae),
        buckets_px=[list(b) for b in data.buckets_px], max_base_tokens=data.max_base_tokens,
        max_context_tokens=data.max_context_tokens, encoder_dtype=str(enc.dtype).removeprefix("torch."),
        latent_channels=enc.latent_channels, down_px=enc.down_px, text_dim=enc.text_dim, source=source)


def read_encoding(loc: Location) -> Encoding | None:
    if not loc.exists(ENCODING_FILE):
        return None
    try:
        return Encoding.from_json(loc.read_bytes(ENCODING_FILE))
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{loc.url}/{ENCODING_FILE} is unreadable ({e}); delete {loc.url} and encode again") from None


def npy_bytes(array: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array.cpu().numpy(), allow_pickle=False)
    return buf.getvalue()


def npy_tensor(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(data), allow_pickle=False))


def sidecar_pairs(data) -> list[tuple[str, str]]:
    """(dataset, its sidecar) of a DataConfig with `latents`, one per dataset in the same order."""
    if len(data.latents) != len(data.datasets):
        raise UserError(f"data.latents has {len(data.latents)} entries for {len(data.datasets)} data.datasets; "
                        f"give one `datagen encode` output per dataset, in the same order")
    return list(zip(data.datasets, data.latents))


def open_encoding(dataset: str, latents: str, expected: Encoding) -> torch.Tensor:
    """Check that `latents` is a complete encoding of `dataset` made as `expected`; returns its null-text states.

    Every failure is one line naming the directory and the fix (a UserError)."""
    lat = Location.parse(latents)
    found = read_encoding(lat)
    fix = f"run `datagen encode {dataset} --out {latents} --config <this training config>`"
    if found is None:
        raise UserError(f"data.latents: {latents!r} holds no {ENCODING_FILE} (not a pre-encoded dataset); {fix}")
    diff = found.mismatch(expected)
    if diff:
        raise UserError(f"data.latents: {latents!r} was encoded differently from this config ({diff}); "
                        f"encode again into a new directory or train without data.latents")
    missing = sorted(set(shard_rels(Location.parse(dataset))) - set(shard_rels(lat)))
    if missing:
        raise UserError(f"data.latents: {latents!r} lacks {len(missing)} shard(s) of {dataset!r} (e.g. {missing[0]}); "
                        f"{fix} again to finish it")
    if not lat.exists(NULL_TEXT_FILE):
        raise UserError(f"data.latents: {latents!r} lacks {NULL_TEXT_FILE}; {fix} again to finish it")
    return npy_tensor(lat.read_bytes(NULL_TEXT_FILE)).float()[None]
