"""What every caption backend takes and returns: a list of requests in, one raw answer (or error) each out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from datagen.caption.prompt import SentImage


@dataclass
class CaptionRequest:
    messages: list[dict[str, Any]]  # OpenAI chat messages, images as base64 data URLs
    images: list[SentImage]  # the same images, for backends that run the model in-process
    schema: dict[str, Any]  # grammar-safe JSON Schema for constrained decoding
    failed_at: str | None = None  # vllm-server: the endpoint its last attempt failed on; a retry goes elsewhere


@dataclass(frozen=True)
class Sampling:
    temperature: float
    max_new_tokens: int
    seed: int


class BackendError(Exception):
    """A request the backend could not answer (server down, timeout, engine error): retried, then `backend_error`."""


class CaptionBackend(Protocol):
    model_id: str
    revision: str

    def generate(self, requests: list[CaptionRequest], sampling: Sampling) -> list[str | BackendError]:
        """One raw model answer per request, in order; errors are returned, not raised."""
        ...
