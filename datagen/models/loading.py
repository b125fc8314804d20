"""Load a model stage's weights once, from a hub id or a local directory, and name what was loaded.

Stages call `load_pretrained` in their constructor (once per Ray actor), so a user's hub
id and a test's `save_pretrained` directory take the same code path. `weights_revision`
(datagen.models.provenance) names what was loaded. `preflight_model` runs on the driver
before any actor starts: a model that cannot be found fails the run there, in one line.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from datagen import UserError
from datagen.models.provenance import hub_cache_dir, hub_revision, weight_files, weights_revision

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device, key: str) -> torch.dtype:
    """'auto' -> bfloat16 on GPU (halves memory, tensor cores), float32 on CPU (bf16 is slow there)."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"config {key}: {dtype!r} is not allowed; allowed values: auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def load_pretrained(model_cls, model: str, revision: str, key: str, device: torch.device, dtype: torch.dtype):
    """`model_cls.from_pretrained(model, revision=...)` on `device`/`dtype`, in eval mode.

    Any failure to find or read the weights becomes a UserError naming the config key.
    """
    try:
        loaded = model_cls.from_pretrained(model, revision=hub_revision(revision), dtype=dtype)
    except Exception as e:  # noqa: BLE001 -- hub, IO and config errors all mean "fix the path"
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise UserError(
            f"config {key}: cannot load {model_cls.__name__} from {model!r} ({first_line}); set {key} to a hub id "
            f"(with network or a filled HF cache) or a local directory written by save_pretrained"
        ) from None
    return loaded.to(device).eval()


def load_for_stage(model_cls, config, stage: str):
    """(model, device, dtype, revision) from a stage config's model/revision/device/dtype keys."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device, f"{stage}.dtype")
    model = load_pretrained(model_cls, config.model, config.revision, f"{stage}.model", device, dtype)
    return model, device, dtype, weights_revision(config.model, config.revision, model)



def preflight_model(model: str, revision: str, key: str) -> str:
    """The revision every actor of a run records for `model` (see provenance.py), resolved
    once here; UserError naming `key` if the weights cannot be found. Reads no weights
    except to fingerprint a local directory that is not a hub snapshot."""
    path = Path(model).expanduser()
    if path.is_dir():
        _check_local(path, model, key)
        return weights_revision(str(path), revision)
    if path.is_absolute() or model.startswith((".", "~")) or model.count("/") > 1:
        raise UserError(f"config {key}: {model!r} does not exist; set {key} to a hub id (org/name) or a local "
                        f"directory written by save_pretrained")
    from huggingface_hub import HfApi, snapshot_download

    try:  # a filled cache loads offline, as from_pretrained will
        folder = Path(snapshot_download(model, revision=hub_revision(revision), cache_dir=hub_cache_dir(),
                                          local_files_only=True))
    except Exception:  # noqa: BLE001 -- not cached: ask the hub (actors will download)
        try:
            return HfApi().model_info(model, revision=hub_revision(revision)).sha
        except Exception as e:  # noqa: BLE001 -- offline, unknown repo, gated, bad revision
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"config {key}: cannot load {model!r}: not in the Hugging Face cache ({hub_cache_dir()}) "
                            f"and the hub says: {first_line}; download it first (huggingface-cli download {model}) "
                            f"or set {key} to a local directory written by save_pretrained") from None
    _check_local(folder, model, key)
    return folder.name  # snapshots/<commit>


def _check_local(path: Path, model: str, key: str) -> None:
    try:
        json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"config {key}: {model!r} has no readable config.json ({type(e).__name__}); set {key} to "
                        f"a directory written by save_pretrained") from None
    if not weight_files(path):
        raise UserError(f"config {key}: {model!r} has no weight files (*.safetensors, *.bin, ...); set {key} to a "
                        f"directory written by save_pretrained")
