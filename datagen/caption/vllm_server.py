"""`vllm-server` backend: OpenAI-compatible endpoints (`vllm serve MODEL`), many requests in flight.

Each request carries frames A and B as base64 `image_url` parts and, when the server
supports it, the caption's JSON Schema as `response_format` (vLLM enforces it with its
structured-output backend); the answer is validated by the stage either way. Requests
are spread round robin over the endpoints; a retry goes to the next endpoint.
"""
from __future__ import annotations

import itertools
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import httpx

from datagen import UserError
from datagen.caption.request import BackendError, CaptionRequest, Sampling
from datagen.models.provenance import weights_revision


class VllmServer:
    def __init__(self, endpoints: list[str], model: str, revision: str, api_key: str,
                 requests_in_flight: int, timeout_s: float, guided: bool, section: str = "caption"):
        if not endpoints:
            raise UserError(f"{section}.endpoints: the vllm-server backend needs at least one URL, e.g. http://host:8000/v1")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers,
                                   limits=httpx.Limits(max_connections=requests_in_flight))
        self.pool = ThreadPoolExecutor(requests_in_flight, thread_name_prefix="caption-http")
        self.guided = guided
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.model_id = model
        # The name a server reports for its model is what requests must name; a local path
        # given in the config also lets provenance hash the weights the server loaded.
        self.revision = revision or (weights_revision(model) if model else "unknown")

    def _endpoint(self, avoid: str | None) -> str:
        with self._lock:
            url = self.endpoints[next(self._next) % len(self.endpoints)]
            if url == avoid and len(self.endpoints) > 1:
                url = self.endpoints[next(self._next) % len(self.endpoints)]
            return url

    def _body(self, request: CaptionRequest, sampling: Sampling) -> dict:
        body = {
            "model": self.model_id, "messages": request.messages, "temperature": sampling.temperature,
            "max_tokens": sampling.max_new_tokens, "seed": sampling.seed,
        }
        if self.guided:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "caption", "schema": request.schema}}
        return body

    def _one(self, request: CaptionRequest, sampling: Sampling) -> str | BackendError:
        endpoint = self._endpoint(request.failed_at)
        answer = self._ask(endpoint, request, sampling)
        if isinstance(answer, BackendError):
            request.failed_at = endpoint  # its retry goes to another endpoint
        return answer

    def _ask(self, endpoint: str, request: CaptionRequest, sampling: Sampling) -> str | BackendError:
        url = endpoint + "/chat/completions"
        try:
            resp = self.client.post(url, json=self._body(request, sampling))
        except httpx.HTTPError as e:
            return BackendError(f"{url}: {type(e).__name__}: {e}")
        if resp.status_code != 200:
            return BackendError(f"{url}: HTTP {resp.status_code}: {resp.text[:300]}")
        try:
            return resp.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return BackendError(f"{url}: unexpected reply ({type(e).__name__}: {e}): {resp.text[:300]}")

    def generate(self, requests: list[CaptionRequest], sampling: Sampling) -> list[str | BackendError]:
        return list(self.pool.map(lambda r: self._one(r, sampling), requests))

    def submit(self, request: CaptionRequest, sampling: Sampling) -> Future:
        """One request's answer, later: the pool's `requests_in_flight` threads serve every
        batch the actor has in flight, so the server is never left without work between batches."""
        return self.pool.submit(self._one, request, sampling)
