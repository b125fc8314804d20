"""`vllm-engine` backend: vLLM's offline `LLM` inside the stage's actor (one engine per GPU actor).

The same chat messages as the server backend; each request's JSON Schema becomes vLLM's
structured output (guided decoding). Needs `vllm` importable in the actor's environment
(GPU clusters: `pip install vllm`; CPU: scripts/setup_vllm_cpu.sh).

Requests go through an engine loop (`submit`): one thread owns the engine, adds what the
stage's calls hand it and steps the engine while anything is unfinished, resolving each
request's future the step it finishes. With `resources.batches_in_flight` > 1 the actor
runs several Ray batches at once, so the next batch's requests and every retry join the
running batch as slots free up (vLLM's continuous batching), instead of waiting for the
slowest answer of a batch-wide `LLM.chat` call (`generate`, kept as the barrier baseline
of bench/caption_flow.py).
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
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
        self._loop = EngineLoop(self.llm)

    def _params(self, request: CaptionRequest, sampling: Sampling):
        return self._sampling_cls(
            temperature=sampling.temperature, max_tokens=sampling.max_new_tokens, seed=sampling.seed,
            structured_outputs=self._structured_cls(json=request.schema) if self.guided else None,
        )

    def submit(self, request: CaptionRequest, sampling: Sampling) -> Future:
        """The request's answer (str or BackendError), resolved by the engine loop when it finishes."""
        return self._loop.submit(request.messages, self._params(request, sampling))

    def generate(self, requests: list[CaptionRequest], sampling: Sampling) -> list[str | BackendError]:
        """The whole batch in one `LLM.chat` call: returns when its slowest request does."""
        with self._loop.engine:
            outputs = self.llm.chat([r.messages for r in requests], sampling_params=[self._params(r, sampling)
                                                                                   for r in requests], use_tqdm=False)
        return [_text(o) for o in outputs]


def _external_id(request_id: str) -> str:
    """The id vLLM's outputs carry for a request `enqueue_chat` returned: `LLM` numbers its
    requests, and the engine appends "-" and 8 random characters internally (0.32)."""
    return request_id.split("-", 1)[0]


def _text(output: Any) -> str | BackendError:
    return output.outputs[0].text if output.outputs else BackendError("engine returned no completion")


class EngineLoop:
    """One thread owns an `LLM`: it enqueues submitted chats, steps the engine, and resolves
    each request's future as it finishes. The engine is not thread-safe; this is its only user
    while requests are unfinished (`engine` is held for the whole busy period)."""

    def __init__(self, llm: Any):
        self.llm = llm
        self.engine = threading.Lock()
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._running: dict[str, Future] = {}  # vLLM request id -> its caller's future
        self._lifecycle = threading.Lock()  # the loop thread's start and stop
        self._thread: threading.Thread | None = None
        self._stopped: BaseException | None = None

    def submit(self, messages: list[dict[str, Any]], params: Any) -> Future:
        future: Future = Future()
        with self._lifecycle:  # with the loop's stop: a request is either queued before it, or answered here
            if self._stopped is not None:
                future.set_result(BackendError(f"vLLM engine loop stopped: {self._stopped!r}"))
                return future
            self._inbox.put((messages, params, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vllm-engine-loop", daemon=True)
                self._thread.start()
        return future

    def _run(self) -> None:
        try:
            while True:
                first = self._inbox.get()  # idle: wait for work without holding the engine
                with self.engine:
                    self._add(first)
                    while self._running:
                        self._add_waiting()
                        self._step()
        except BaseException as e:  # noqa: BLE001 -- the loop must never leave a caller waiting
            with self._lifecycle:
                self._stopped = e
                for future in self._running.values():
                    future.set_result(BackendError(f"vLLM engine loop stopped: {e!r}"))
                self._running.clear()
                while not self._inbox.empty():
                    self._inbox.get_nowait()[2].set_result(BackendError(f"vLLM engine loop stopped: {e!r}"))

    def _add_waiting(self) -> None:
        while True:
            try:
                self._add(self._inbox.get_nowait())
            except queue.Empty:
                return

    def _add(self, item: tuple[list, Any, Future]) -> None:
        """One chat into the engine (alone: a prompt vLLM refuses fails its own request only)."""
        messages, params, future = item
        try:
            (request_id,) = self.llm.enqueue_chat([messages], sampling_params=[params], use_tqdm=False)
        except Exception as e:  # noqa: BLE001 -- e.g. a prompt over max_model_len
            future.set_result(BackendError(f"vLLM refused the request: {type(e).__name__}: {e}"))
            return
        self._running[_external_id(request_id)] = future

    def _step(self) -> None:
        engine = self.llm.llm_engine
        if not engine.has_unfinished_requests():  # a step would wait forever for outputs
            for future in self._running.values():
                future.set_result(BackendError("vLLM finished the request without an answer"))
            self._running.clear()
            return
        try:
            outputs = engine.step()
        except Exception as e:  # noqa: BLE001 -- an engine error fails what it was running, not the actor
            for future in self._running.values():
                future.set_result(BackendError(f"vLLM engine step: {type(e).__name__}: {e}"))
            self._running.clear()
            return
        for output in outputs:
            if output.finished and output.request_id in self._running:
                self._running.pop(output.request_id).set_result(_text(output))
