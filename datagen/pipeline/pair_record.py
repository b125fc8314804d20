"""What the writer commits for a pair besides its samples: its pair-store record, and for a
re-label, what changed against the version it came from.

The sink calls these on the one row per pair that assemble emits; they read the pair's
labelled columns (carried through assemble) and the re-label columns of relabel_steps.py.
"""
from __future__ import annotations

import json
from typing import Any

from datagen.io.pair_store import encode_pair
from datagen.pipeline.relabel_steps import KEPT, RELABEL_JSON, RERUN
from schemas import columns as C
from schemas.labels import record_labels
from schemas.sample import Provenance
from schemas.tasks import TASK_BY_ID


def task_of(key: str) -> str:
    """The task name of a sample key (`..._tNN`)."""
    return TASK_BY_ID[int(key.rsplit("_t", 1)[1])].name


def _relabel(row: dict[str, Any]) -> dict[str, Any] | None:
    raw = row.get(RELABEL_JSON)
    return json.loads(raw) if raw else None


def pair_record(row: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, list[str]]]:
    """(pair-store members, keys added/removed/changed) of one assembled pair row."""
    made = list(row.get(C.SAMPLE_KEYS) or [])
    rel = _relabel(row)
    if rel is None:
        return encode_pair(row, made), {}
    rebuilt = set(rel["tasks"])
    old = [k for k in rel["old_samples"] if task_of(k) in rebuilt]
    kept = [k for k in rel["old_samples"] if task_of(k) not in rebuilt]  # their shards were copied as they are
    rerun = list(row.get(RERUN) or [])
    history = {"rerun": rerun, "previous_labels": {s: rel["old_labels"][s] for s in rerun if s in rel["old_labels"]},
               "kept_old_label": json.loads(row.get(KEPT) or "[]")}
    new, before = set(made), set(old)
    changes = {"added": sorted(new - before), "removed": sorted(before - new),
               "changed": sorted(k for k in new & before if set(record_labels(task_of(k))) & set(rerun))}
    return encode_pair(row, kept + made, history), changes


def label_changes(row: dict[str, Any], task: str) -> tuple[list[str], dict[str, Provenance]]:
    """(labels re-run, their old provenance) of a sample of `task` rebuilt from this row: the manifest's
    changed_labels and previous_labels."""
    rel = _relabel(row)
    if rel is None:
        return [], {}
    changed = [s for s in (row.get(RERUN) or []) if s in record_labels(task)]
    return changed, {s: Provenance(**rel["old_labels"][s]) for s in changed if s in rel["old_labels"]}


def kept_label_failures(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Failure rows of the re-runs that failed for good on this pair (it kept the old label)."""
    return [{"input_uri": row.get(C.VIDEO_URI), "video_id": row.get(C.VIDEO_ID), "key": row.get(C.PAIR_KEY),
             "stage": f["stage"], "reason": f["reason"], "detail": f"kept the old label: {f['detail']}"}
            for f in json.loads(row.get(KEPT) or "[]")]  # reasons the stages emitted, forwarded
