"""caption: a VLM writes caption_a, caption_b, the A->B instruction, edit type and A's objects.

Input columns: IMAGE_A, IMAGE_B (encoded bytes), WIDTH, HEIGHT, FACTS. Output: CAPTION
(JSON) and `provenance_caption`. Answers that are not valid JSON, miss fields, refuse or
name boxes outside the frame are retried (sampled, new seed) up to `max_retries` times,
then the row is marked failed with the last reason; a backend that stays down gives
`backend_error`. The backend is built once per actor, never per batch.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from datagen.caption.backends import open_backend
from datagen.caption.prompt import PROMPT_VERSION, build_messages, prepare_image
from datagen.caption.request import CaptionRequest
from datagen.caption.retry import ask_with_retries
from datagen.caption.schema import caption_schema, grammar_schema
from datagen.caption.validate import check_caption
from schemas import columns as C
from schemas.sample import Provenance
from stages.base import Resources, Stage, fail


@dataclass
class CaptionConfig:
    backend: Literal["transformers", "vllm-server", "vllm-engine"] = "vllm-engine"  # GPU clusters; CPU: transformers
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"  # hub id or local dir (the served model name for vllm-server)
    revision: str = ""  # hub revision; empty: the cached commit or a hash of local weights is recorded
    endpoints: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8000/v1"])  # vllm-server, round robin
    api_key_env: str = "VLLM_API_KEY"  # env var holding the server's --api-key, if it has one
    requests_in_flight: int = 32  # vllm-server: concurrent requests per actor, so the server can batch
    request_timeout_s: float = 120.0
    guided_decoding: bool = True  # JSON-schema constrained output (xgrammar); validated anyway
    max_retries: int = 2  # extra attempts per row after a bad answer or a backend error
    retry_temperature: float = 0.7  # retries sample, else a greedy model repeats its bad answer
    retry_backoff_s: float = 1.0  # wait before retrying backend errors, doubled each attempt
    max_new_tokens: int = 512  # a full answer is ~150-300 tokens
    temperature: float = 0.0  # greedy: the same pair gets the same label
    seed: int = 0
    device: str = "auto"  # transformers/vllm-engine: "cpu", "cuda", "cuda:1"; auto = cuda when present
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    max_image_side_px: int = 756  # 27*28: ~730 visual tokens per frame for Qwen2.5-VL
    image_multiple_px: int = 28  # Qwen's patch 14 x merge 2: the model's pixel grid is exactly the image sent
    box_units: Literal["pixels", "norm1000"] = "pixels"  # Qwen2.5-VL boxes are absolute pixels; Qwen2-VL 0-1000
    max_text_chars: int = 300  # bound on each caption/instruction string
    max_objects: int = 8
    engine_args: dict[str, Any] = field(default_factory=dict)  # vllm-engine: extra vllm.LLM kwargs (max_model_len, ...)
    # batches_in_flight 4: vllm-engine/-server keep the engine fed across Ray batches (transformers serializes them)
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=1, batch_size=64,
                                                                   batches_in_flight=4))

    def __post_init__(self):
        for name in ("max_retries", "max_objects"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("requests_in_flight", "max_new_tokens", "max_text_chars", "image_multiple_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_image_side_px < self.image_multiple_px:
            raise ValueError(f"max_image_side_px ({self.max_image_side_px}) must be >= image_multiple_px")


@dataclass
class _Job:
    request: CaptionRequest
    schema: dict[str, Any]  # validation schema (the request carries the grammar-safe one)
    box_space: tuple[int, int]  # the model's box coordinate range


class CaptionStage(Stage):
    name = "caption"

    def __init__(self, config: CaptionConfig):
        self.config = config
        self.backend = open_backend(config)
        p = config
        self.provenance = json.dumps(asdict(Provenance(self.backend.model_id, self.backend.revision, params={
            "backend": p.backend, "prompt_version": PROMPT_VERSION, "temperature": p.temperature,
            "retry_temperature": p.retry_temperature, "max_new_tokens": p.max_new_tokens, "seed": p.seed,
            "max_image_side_px": p.max_image_side_px, "image_multiple_px": p.image_multiple_px,
            "box_units": p.box_units, "guided_decoding": p.guided_decoding,
            "max_text_chars": p.max_text_chars, "max_objects": p.max_objects,
        })), sort_keys=True)

    def _job(self, row: dict) -> _Job:
        cfg = self.config
        a = prepare_image(row[C.IMAGE_A], cfg.max_image_side_px, cfg.image_multiple_px)
        b = prepare_image(row[C.IMAGE_B], cfg.max_image_side_px, cfg.image_multiple_px)
        box_space = (a.width_px, a.height_px) if cfg.box_units == "pixels" else (1000, 1000)
        schema = caption_schema(*box_space, cfg.max_text_chars, cfg.max_objects)
        messages = build_messages(a, b, row.get(C.FACTS), cfg.box_units)
        return _Job(CaptionRequest(messages, [a, b], grammar_schema(schema)), schema, box_space)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cfg = self.config
        jobs: dict[int, _Job] = {}
        for i, row in enumerate(rows):
            # every batch has both columns, failed rows with None (Ray blocks share one schema)
            row[C.CAPTION] = row[C.provenance_column(self.name)] = None
            try:
                jobs[i] = self._job(row)
            except (OSError, ValueError, TypeError, KeyError) as e:  # undecodable or missing image
                fail(row, self.name, "bad_image", f"{type(e).__name__}: {e}")

        def check(i: int, answer: str):
            verdict = check_caption(answer, jobs[i].schema, jobs[i].box_space, (rows[i][C.WIDTH], rows[i][C.HEIGHT]))
            return verdict.caption, verdict.reason, verdict.detail

        captions, failures = ask_with_retries(self.backend, {i: j.request for i, j in jobs.items()}, check, cfg)
        for i, caption in captions.items():
            rows[i][C.CAPTION] = json.dumps(caption, ensure_ascii=False)
            rows[i][C.provenance_column(self.name)] = self.provenance
        for i, (reason, detail) in failures.items():
            fail(rows[i], self.name, reason, detail)
        return rows
