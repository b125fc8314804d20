"""Build a VLM backend from a stage's config: the caption and the verify stage use the same three."""
from __future__ import annotations

import os
from typing import Any, Protocol


class BackendConfig(Protocol):
    backend: str
    model: str
    revision: str
    endpoints: list[str]
    api_key_env: str
    requests_in_flight: int
    request_timeout_s: float
    guided_decoding: bool
    seed: int
    device: str
    dtype: str
    engine_args: dict[str, Any]


def open_backend(cfg: BackendConfig, section: str = "caption"):
    """The backend `cfg.backend` names, built once per actor; `section` names the config in errors."""
    device = cfg.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
    if cfg.backend == "transformers":
        from datagen.caption.local_vlm import TransformersVLM

        return TransformersVLM(cfg.model, cfg.revision, device, dtype, section)
    if cfg.backend == "vllm-server":
        from datagen.caption.vllm_server import VllmServer

        return VllmServer(cfg.endpoints, cfg.model, cfg.revision, os.environ.get(cfg.api_key_env, ""),
                          cfg.requests_in_flight, cfg.request_timeout_s, cfg.guided_decoding, section)
    from datagen.caption.vllm_engine import VllmEngine

    return VllmEngine(cfg.model, cfg.revision, dtype, cfg.guided_decoding, cfg.seed, cfg.engine_args, section)
