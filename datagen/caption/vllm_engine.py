"""`vllm-engine` backend: vLLM's offline `LLM` inside the stage's actor (one engine per GPU actor).

The same chat messages as the server backend go through `LLM.chat`, the whole batch at
once so vLLM schedules it continuously; each request's JSON Schema becomes vLLM's
structured output (guided decoding). Needs `vllm` importable in the actor's environment
(GPU clusters: `pip install vllm`; CPU: scripts/setup_vllm_cpu.sh).
"""
from __future__ import annotations

from typing import Any

from datagen import UserError
from datagen.caption.request import BackendError, CaptionRequest, Sampling
from datagen.models.provenance import hub_revision, weights_revision


class VllmEngine:
    def __init__(self, model: str, revision: str, dtype: str, guided: bool, seed: int, engine_args: dict[str, Any],
                 section: str = "caption"):
        try:
            from vllm import LLM, SamplingParams
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError as e:
            raise UserError(f"{section}.backend 'vllm-engine' needs vLLM in this environment ({e}); "
                            "install vllm, or use backend 'vllm-server' or 'transformers'") from None
        self._sampling_cls, self._structured_cls = SamplingParams, StructuredOutputsParams
        # No free whitespace in guided JSON (a weak model could pad to the token limit); vLLM
        # takes this engine-wide (ignored per request in 0.32), and only with xgrammar/guidance.
        structured = {"backend": "xgrammar", "disable_any_whitespace": True}
        args = {"limit_mm_per_prompt": {"image": 2}, "seed": seed, "structured_outputs_config": structured, **engine_args}
        self.llm = LLM(model=model, revision=hub_revision(revision), dtype=dtype, **args)
        self.guided = guided
        self.model_id = model
        self.revision = weights_revision(model, revision)

    def generate(self, requests: list[CaptionRequest], sampling: Sampling) -> list[str | BackendError]:
        params = [
            self._sampling_cls(
                temperature=sampling.temperature, max_tokens=sampling.max_new_tokens, seed=sampling.seed,
                structured_outputs=self._structured_cls(json=r.schema) if self.guided else None,
            )
            for r in requests
        ]
        outputs = self.llm.chat([r.messages for r in requests], sampling_params=params, use_tqdm=False)
        return [o.outputs[0].text if o.outputs else BackendError("engine returned no completion") for o in outputs]
