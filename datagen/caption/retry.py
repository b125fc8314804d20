"""Ask a VLM backend for one answer per request, retrying bad answers and backend errors.

Shared by the caption and verify stages (the same rules for both): a first greedy attempt,
then up to `max_retries` sampled ones with a new seed each (a greedy model would repeat
its bad answer); backend errors wait `retry_backoff_s`, doubled each attempt. An engine
that raises fails that attempt for the whole batch, never the actor.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Protocol

from datagen.caption.request import BackendError, CaptionBackend, CaptionRequest, Sampling


class RetryPolicy(Protocol):
    max_retries: int
    temperature: float
    retry_temperature: float
    retry_backoff_s: float
    max_new_tokens: int
    seed: int


# check(index, raw answer) -> (accepted value or None, reason, detail)
Check = Callable[[int, str], tuple[Any, str, str]]


def ask_with_retries(backend: CaptionBackend, requests: dict[int, CaptionRequest], check: Check,
                     policy: RetryPolicy) -> tuple[dict[int, Any], dict[int, tuple[str, str]]]:
    """(accepted value per index, (reason, detail) of the last failure per index left over)."""
    accepted: dict[int, Any] = {}
    last_error: dict[int, tuple[str, str]] = {}
    pending = list(requests)
    for attempt in range(1 + policy.max_retries):
        if not pending:
            break
        if attempt and any(last_error[i][0] == "backend_error" for i in pending):
            time.sleep(policy.retry_backoff_s * 2 ** (attempt - 1))
        temperature = policy.temperature if attempt == 0 else max(policy.temperature, policy.retry_temperature)
        sampling = Sampling(temperature, policy.max_new_tokens, policy.seed + attempt)
        try:
            answers = backend.generate([requests[i] for i in pending], sampling)
        except Exception as e:  # an engine crash fails this attempt for the batch, not the actor
            answers = [BackendError(f"{type(e).__name__}: {e}")] * len(pending)
        still = []
        for i, answer in zip(pending, answers):
            if isinstance(answer, BackendError):
                last_error[i] = ("backend_error", str(answer))
                still.append(i)
                continue
            value, reason, detail = check(i, answer)
            if value is None:
                last_error[i] = (reason, detail)
                still.append(i)
            else:
                accepted[i] = value
                last_error.pop(i, None)
        pending = still
    attempts = 1 + policy.max_retries
    return accepted, {i: (last_error[i][0], f"after {attempts} attempts: {last_error[i][1]}") for i in pending}
