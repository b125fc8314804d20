"""Ask a VLM backend for one answer per request, retrying bad answers and backend errors.

Shared by the caption and verify stages (the same rules for both): a first greedy attempt,
then up to `max_retries` sampled ones with a new seed each (a greedy model would repeat
its bad answer); backend errors wait `retry_backoff_s`, doubled each attempt. An engine
that raises fails that attempt for the whole batch, never the actor.

A backend that takes requests one at a time (`submit`, a future per request: the vLLM
engine loop, the HTTP client) gets each retry queued the moment its answer fails, while
the rest of the batch is still generating: no attempt waits for a slower request's. A
batch-only backend (in-process transformers) runs attempt by attempt. Both give the same
answers: attempt k of a request has the same temperature and seed either way.
"""
from __future__ import annotations

import heapq
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
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


def sampling_for(policy: RetryPolicy, attempt: int) -> Sampling:
    temperature = policy.temperature if attempt == 0 else max(policy.temperature, policy.retry_temperature)
    return Sampling(temperature, policy.max_new_tokens, policy.seed + attempt)


def ask_with_retries(backend: CaptionBackend, requests: dict[int, CaptionRequest], check: Check,
                     policy: RetryPolicy) -> tuple[dict[int, Any], dict[int, tuple[str, str]]]:
    """(accepted value per index, (reason, detail) of the last failure per index left over)."""
    if callable(getattr(backend, "submit", None)):
        return _ask_streaming(backend, requests, check, policy)
    accepted: dict[int, Any] = {}
    last_error: dict[int, tuple[str, str]] = {}
    pending = list(requests)
    for attempt in range(1 + policy.max_retries):
        if not pending:
            break
        if attempt and any(last_error[i][0] == "backend_error" for i in pending):
            time.sleep(policy.retry_backoff_s * 2 ** (attempt - 1))
        try:
            answers = backend.generate([requests[i] for i in pending], sampling_for(policy, attempt))
        except Exception as e:  # an engine crash fails this attempt for the batch, not the actor
            answers = [BackendError(f"{type(e).__name__}: {e}")] * len(pending)
        pending = [i for i, answer in zip(pending, answers) if not _settle(i, answer, check, accepted, last_error)]
    return accepted, _left_over(pending, last_error, policy)


def _settle(i: int, answer: str | BackendError, check: Check, accepted: dict[int, Any],
            last_error: dict[int, tuple[str, str]]) -> bool:
    """Record request `i`'s answer: True when it is accepted, else its failure is its last error."""
    if isinstance(answer, BackendError):
        last_error[i] = ("backend_error", str(answer))
        return False
    value, reason, detail = check(i, answer)
    if value is None:
        last_error[i] = (reason, detail)
        return False
    accepted[i] = value
    last_error.pop(i, None)
    return True


def _left_over(indices, last_error: dict[int, tuple[str, str]], policy: RetryPolicy) -> dict[int, tuple[str, str]]:
    attempts = 1 + policy.max_retries
    return {i: (last_error[i][0], f"after {attempts} attempts: {last_error[i][1]}") for i in indices}


def _ask_streaming(backend: Any, requests: dict[int, CaptionRequest], check: Check,
                   policy: RetryPolicy) -> tuple[dict[int, Any], dict[int, tuple[str, str]]]:
    """Every request's attempts as a chain of its own: a failed answer's next attempt is
    submitted at once (a backend error's after its backoff), whatever the others are doing."""
    accepted: dict[int, Any] = {}
    last_error: dict[int, tuple[str, str]] = {}
    attempt = dict.fromkeys(requests, 0)
    in_flight: dict[Future, int] = {}
    backoff: list[tuple[float, int]] = []  # (due, index): backend errors waiting out their backoff

    def submit(i: int) -> None:
        try:
            in_flight[backend.submit(requests[i], sampling_for(policy, attempt[i]))] = i
        except Exception as e:  # noqa: BLE001 -- a backend that cannot take it fails this attempt
            done: Future = Future()
            done.set_result(BackendError(f"{type(e).__name__}: {e}"))
            in_flight[done] = i

    for i in requests:
        submit(i)
    while in_flight or backoff:
        while backoff and backoff[0][0] <= time.monotonic():
            submit(heapq.heappop(backoff)[1])
        if not in_flight:
            time.sleep(max(0.0, backoff[0][0] - time.monotonic()))
            continue
        timeout = max(0.0, backoff[0][0] - time.monotonic()) if backoff else None
        done, _ = wait(list(in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            i = in_flight.pop(future)
            try:
                answer = future.result()
            except Exception as e:  # noqa: BLE001 -- an engine crash fails the attempt, not the actor
                answer = BackendError(f"{type(e).__name__}: {e}")
            if _settle(i, answer, check, accepted, last_error) or attempt[i] >= policy.max_retries:
                continue
            attempt[i] += 1
            if isinstance(answer, BackendError):
                heapq.heappush(backoff, (time.monotonic() + policy.retry_backoff_s * 2 ** (attempt[i] - 1), i))
            else:
                submit(i)
    return accepted, _left_over([i for i in requests if i not in accepted], last_error, policy)
