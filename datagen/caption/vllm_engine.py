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
from datagen.models.provenance import weights_revision


class VllmEngine:
    def __init__(self, model: str, revision: str, dtype: str, guided: bool, seed: int, engine_args: dict[str, Any]):
        try:
            from vllm import LLM, SamplingParams
            from vllm.sampling_params import StructuredOutputsParams
        except ImportError as e:
            raise UserError(f"caption.backend 'vllm-engine' needs vLLM in this environment ({e}); "
                            "install vllm, or use backend 'vllm-server' or 'transformers'") from None
        self._sampling_cls, self._structured_cls = SamplingParams, StructuredOutputsParams
        # xgrammar: the structured-output backend that honours `disable_any_whitespace`
        args = {"limit_mm_per_prompt": {"image": 2}, "seed": seed, "structured_outputs_config": {"backend": "xgrammar"},
                **engine_args}
        self.llm = LLM(model=model, revision=revision or None, dtype=dtype, **args)
        self.guided = guided
        self.model_id = model
        self.revision = weights_revision(model, revision)

    def generate(self, requests: list[CaptionRequest], sampling: Sampling) -> list[str | BackendError]:
        params = [
            self._sampling_cls(
                temperature=sampling.temperature, max_tokens=sampling.max_new_tokens, seed=sampling.seed,
                # no free whitespace: a weak model could otherwise pad to the token limit
                structured_outputs=self._structured_cls(json=r.schema, disable_any_whitespace=True) if self.guided else None,
            )
            for r in requests
        ]
        outputs = self.llm.chat([r.messages for r in requests], sampling_params=params, use_tqdm=False)
        return [o.outputs[0].text if o.outputs else BackendError("engine returned no completion") for o in outputs]
