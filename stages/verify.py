"""verify: a VLM judge scores whether the caption's instruction turns frame A into frame B.

The judge sees A, B and the instruction and answers constrained JSON (datagen/judge): the
parts that fail, whether B is plausible as an edit of A, and a 1-5 score. Below
`min_score` the pair is dropped with reason `instruction_mismatch`; the writer keeps it,
with its verdict, in the negatives table so a later judge (or a preference model) can
reuse it. Answers that fail validation are retried, then recorded with the caption's
reasons: a run never crashes on judge output. Backends and retries are the caption's
(transformers, vllm-server, vllm-engine); the judge model may differ from the captioner.
Input: IMAGE_A, IMAGE_B, CAPTION. Output: VERIFY (JSON) and `provenance_verify`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Literal

from datagen import UserError
from datagen.caption.backends import open_backend
from datagen.caption.prompt import prepare_image
from datagen.caption.request import CaptionRequest
from datagen.caption.retry import ask_with_retries
from datagen.caption.schema import grammar_schema
from datagen.judge.prompt import PROMPT_VERSION, build_judge_messages
from datagen.judge.schema import MAX_SCORE, MIN_SCORE, judge_schema
from datagen.judge.validate import check_verdict
from schemas import columns as C
from schemas.sample import Provenance
from stages.base import Resources, Stage, fail

Backend = Literal["", "transformers", "vllm-server", "vllm-engine"]


@dataclass
class VerifyConfig:
    # 3 is "partly": published edit sets keep the judge's 3+ (OmniEdit, NHR-Edit); raise to 4 for a
    # smaller, cleaner set
    min_score: int = 3
    # Empty: the captioner's backend / model (and revision) / endpoints. A different, stronger judge
    # avoids a model grading its own instructions.
    backend: Backend = ""
    model: str = ""
    revision: str = ""
    endpoints: list[str] = field(default_factory=list)
    api_key_env: str = "VLLM_API_KEY"  # env var holding the server's --api-key, if it has one
    requests_in_flight: int = 32  # vllm-server: concurrent requests per actor, so the server can batch
    request_timeout_s: float = 120.0
    guided_decoding: bool = True  # JSON-schema constrained output; validated anyway
    max_retries: int = 2  # extra attempts per row after a bad answer or a backend error
    retry_temperature: float = 0.7  # retries sample, else a greedy model repeats its bad answer
    retry_backoff_s: float = 1.0  # wait before retrying backend errors, doubled each attempt
    max_new_tokens: int = 160  # a verdict is ~20-80 tokens
    temperature: float = 0.0  # greedy: the same pair gets the same verdict
    seed: int = 0
    device: str = "auto"  # transformers/vllm-engine: "cpu", "cuda", "cuda:1"; auto = cuda when present
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    max_image_side_px: int = 756  # as the caption's: the judge must see what the captioner saw
    image_multiple_px: int = 28  # Qwen's patch 14 x merge 2
    max_text_chars: int = 120  # bound on each failing part
    max_failing_parts: int = 4
    engine_args: dict[str, Any] = field(default_factory=dict)  # vllm-engine: extra vllm.LLM kwargs
    # batches_in_flight 4: as caption's, the judge's engine stays fed across Ray batches
    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1, num_gpus=1, batch_size=64, concurrency=1,
                                                                   batches_in_flight=4))

    def __post_init__(self):
        if not MIN_SCORE <= self.min_score <= MAX_SCORE:
            raise ValueError(f"min_score must be within {MIN_SCORE}..{MAX_SCORE}, got {self.min_score}")
        for name in ("max_retries", "max_failing_parts"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("requests_in_flight", "max_new_tokens", "max_text_chars", "image_multiple_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def resolved(self, caption: Any) -> "VerifyConfig":
        """This config with what is left empty taken from the caption section (one model serves both by default)."""
        model, revision = (self.model, self.revision) if self.model else (caption.model, caption.revision)
        return replace(self, backend=self.backend or caption.backend, model=model, revision=revision,
                       endpoints=self.endpoints or list(caption.endpoints))


class VerifyStage(Stage):
    name: ClassVar[str] = "verify"
    Config = VerifyConfig

    def __init__(self, config: VerifyConfig):
        if not config.backend or not config.model:
            raise UserError("verify.backend and verify.model must be set (a pipeline config fills them from caption)")
        self.config = p = config
        self.backend = open_backend(config, self.name)
        self.schema = judge_schema(p.max_text_chars, p.max_failing_parts)
        self.grammar = grammar_schema(self.schema)
        self.provenance = json.dumps(asdict(Provenance(self.backend.model_id, self.backend.revision, params={
            "backend": p.backend, "prompt_version": PROMPT_VERSION, "temperature": p.temperature,
            "retry_temperature": p.retry_temperature, "max_new_tokens": p.max_new_tokens, "seed": p.seed,
            "max_image_side_px": p.max_image_side_px, "image_multiple_px": p.image_multiple_px,
            "guided_decoding": p.guided_decoding, "min_score": p.min_score,
        })), sort_keys=True)

    def _request(self, row: dict[str, Any]) -> CaptionRequest:
        cfg = self.config
        instruction = json.loads(row[C.CAPTION])["instruction"]
        a = prepare_image(row[C.IMAGE_A], cfg.max_image_side_px, cfg.image_multiple_px)
        b = prepare_image(row[C.IMAGE_B], cfg.max_image_side_px, cfg.image_multiple_px)
        return CaptionRequest(build_judge_messages(a, b, str(instruction)), [a, b], self.grammar)

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        cfg = self.config
        requests: dict[int, CaptionRequest] = {}
        for i, row in enumerate(rows):
            row[C.VERIFY] = row[C.provenance_column(self.name)] = None  # every batch has both columns
            if not row.get(C.CAPTION):
                fail(row, self.name, "bad_caption", "no caption to verify (run caption before verify)")
                continue
            try:
                requests[i] = self._request(row)
            except (KeyError, TypeError, ValueError) as e:  # caption JSON without an instruction
                fail(row, self.name, "bad_caption", f"{type(e).__name__}: {e}")
            except OSError as e:  # undecodable image
                fail(row, self.name, "bad_image", f"{type(e).__name__}: {e}")
        verdicts, failures = ask_with_retries(self.backend, requests, lambda i, raw: check_verdict(raw, self.schema), cfg)
        for i, verdict in verdicts.items():
            row = rows[i]
            row[C.VERIFY] = json.dumps(verdict, ensure_ascii=False, sort_keys=True)
            row[C.provenance_column(self.name)] = self.provenance
            if verdict["score"] < cfg.min_score:
                failing = "; ".join(verdict["failing_parts"]) or "none named"
                fail(row, self.name, "instruction_mismatch",
                     f"judge score {verdict['score']} < verify.min_score {cfg.min_score} (failing: {failing})")
        for i, (reason, detail) in failures.items():
            fail(rows[i], self.name, reason, detail)
        return rows
