"""Where a run stands, from its tables: samples committed, pairs pending retry and permanent drops.

The failures table is a log (a pair that failed transiently twice, then passed, has two
rows); the progress table says what is settled. A transient failure is pending while no
progress row settles its pair (or, for a video-level failure, its video); a permanent
drop counts while no later run made its pair (`--retry-failed` may have).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from datagen.io.storage import Location
from datagen.io.tables import count_manifest_rows, read_failures
from datagen.pipeline.progress import read_progress
from datagen.video.windows import is_window_id
from schemas.reasons import REASONS, TRANSIENT


def _tables(loc: Location) -> tuple[list[dict], list[dict]]:
    progress = read_progress(loc).select(["pair_key", "video_id", "video_uri", "status", "reason"]).to_pylist()
    failures = read_failures(loc).select(["input_uri", "video_id", "key", "stage", "reason"]).to_pylist()
    return progress, failures


def _judge(progress: list[dict], failures: list[dict]):
    """Each failure row with what it means now: "pending" (transient, not settled), "dropped" (stands)
    or None (history: a later run settled or made what failed)."""
    settled_pairs = {r["pair_key"] for r in progress if r["pair_key"]}
    settled_videos = {r["video_uri"] for r in progress}
    settled_windows = {r["video_id"] for r in progress if is_window_id(r["video_id"])}
    made = {r["pair_key"] for r in progress if r["status"] == "done"}
    for f in failures:
        if REASONS.get(f["reason"]) == TRANSIENT:
            # transient failures are of whole pairs (key: the pair key), windows of a long video (by
            # their id: the other windows of its file may be done) or videos (by URI)
            if f["key"]:
                settled = f["key"] in settled_pairs
            elif is_window_id(f["video_id"]):
                settled = f["video_id"] in settled_windows
            else:
                settled = f["input_uri"] in settled_videos
            yield f, None if settled else "pending"
        elif f["stage"] == "assemble":  # one sample of a pair that was made
            yield f, "dropped"
        else:  # a permanent drop of a pair or video, unless `--retry-failed` made it since
            yield f, None if f["key"] and f["key"] in made else "dropped"


def standing_failures(loc: Location) -> list[dict[str, Any]]:
    """The failure rows that still count: pending retries and drops that stand. The log also
    keeps rows of transient failures a later run fixed; those are history, not drops."""
    return [f for f, now in _judge(*_tables(loc)) if now is not None]


def run_outcome(loc: Location) -> dict[str, Any]:
    progress, failures = _tables(loc)
    made = {r["pair_key"] for r in progress if r["status"] == "done"}
    pending: dict[str, str] = {}  # pair key or video URI -> reason
    dropped: dict[str, str] = {}  # sample key, pair key or video URI -> reason
    logged: dict[str, str] = {}  # the same -> reason, for progress rows written before they held one
    for f, now in _judge(progress, failures):
        entity = f["key"] or f["input_uri"]
        logged[entity] = f["reason"]
        if now == "pending":
            pending[entity] = f["reason"]
        elif now == "dropped" and f["stage"] == "assemble":
            dropped[entity] = f["reason"]
    for r in progress:
        entity = r["pair_key"] or r["video_uri"]
        if r["status"] == "failed" and entity not in made:
            dropped[entity] = r["reason"] or logged.get(entity, "unknown")
    return {"committed_samples": count_manifest_rows(loc),
            "pending_retry": dict(sorted(Counter(pending.values()).items())),
            "dropped": dict(sorted(Counter(dropped.values()).items()))}


def _by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{r}={n}" for r, n in counts.items())


def outcome_lines(outcome: dict) -> list[str]:
    """Committed samples, pairs pending retry by reason, permanent drops by reason."""
    pending, dropped = outcome["pending_retry"], outcome["dropped"]
    return [f"committed: {outcome['committed_samples']} samples",
            f"pending retry: {sum(pending.values())}"
            + (f" ({_by_reason(pending)}): run the same command again to retry them" if pending else ""),
            f"dropped for good: {sum(dropped.values())}"
            + (f" ({_by_reason(dropped)}); re-open a reason with --retry-failed REASON" if dropped else "")]
