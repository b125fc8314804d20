"""The operators of a re-label job: pair-store tars -> pair rows, and a labelling stage re-run on them.

A re-label row is a pair row as `assemble` takes it (decoded from the pair store) plus
three columns that say what happened to it in this job:
    relabel_json    the old version: tasks rebuilt here, the pair's old sample keys and labels
    relabel_rerun   labels re-run on this pair (they become `changed_labels` in the manifest)
    relabel_stale   labels that must re-run because an input they read changed (the cascade)
    relabel_kept_json  re-runs that failed for good on this pair: the old label was kept
"""
from __future__ import annotations

import json
from typing import Any

from datagen.io.pair_store import decode_pair, read_pair_range
from datagen.io.storage import Location
from schemas import columns as C
from schemas.labels import LABEL_COLUMNS, STAGE_INPUTS, dependents
from schemas.members import pair_key
from schemas.reasons import TRANSIENT, kind_of
from stages.base import Stage

RELABEL_JSON, RERUN, STALE, KEPT = "relabel_json", "relabel_rerun", "relabel_stale", "relabel_kept_json"
def load_pairs(batch: dict[str, Any], src_url: str, tasks: list[str], done_pairs: frozenset[str]) -> dict[str, list]:
    """Ray task: byte ranges of pair-store tars (pair_store.read_chunks) -> their pairs not yet done,
    as re-label rows."""
    loc = Location.parse(src_url)
    rows = []
    for chunk in C.batch_to_rows(batch):
        for members in read_pair_range(loc, chunk["tar"], chunk["offset"], chunk["span"]):
            row, doc = decode_pair(members)
            if doc["pair_key"] in done_pairs:
                continue
            row[RELABEL_JSON] = json.dumps({"tasks": tasks, "old_samples": doc["samples"], "old_labels": doc["labels"]})
            row[RERUN], row[STALE], row[KEPT] = [], [], "[]"
            rows.append(row)
    return C.rows_to_batch(rows)


class RelabelStep:
    """One labelling stage of a re-label, as an actor: the very stage class `datagen run` uses.

    Re-runs the stage on the pairs that asked for it (all, or only the stale ones), marks
    the stages that read its label stale where that input changed, and keeps the old label
    when the re-run fails for good (recorded as a failure). A transient failure leaves the
    row failed: the pair is not committed, and the next run of the command retries it.
    """

    def __init__(self, stage_cls: type[Stage], config: Any, requested: bool, only_stale: bool):
        self.stage = stage_cls(config)
        self.name, self.requested, self.only_stale = stage_cls.name, requested, only_stale
        self.columns = (*LABEL_COLUMNS[self.name], C.provenance_column(self.name))
        self.readers = [d for d in dependents(self.name) if self.name in STAGE_INPUTS[d]]

    def wants(self, row: dict[str, Any]) -> bool:
        if C.is_failure_mark(row.get(C.FAILED_STAGE)):
            return False
        if self.name in row[STALE]:
            return True
        if not self.requested:
            return False
        return not self.only_stale or row.get(C.provenance_column(self.name)) != self.stage.provenance

    def __call__(self, batch) -> dict[str, list]:
        rows = C.batch_to_rows(batch)
        todo = [r for r in rows if self.wants(r)]
        old = {id(r): {c: r.get(c) for c in self.columns} for r in todo}
        before = {id(r): {d: STAGE_INPUTS[d][self.name](r) for d in self.readers} for r in todo}
        if todo:
            out = C.batch_to_rows(self.stage(C.rows_to_batch(todo)))
            by_pair = {pair_key(r[C.VIDEO_ID], r[C.SHOT], r[C.PAIR]): r for r in out}
            for r in todo:
                new = by_pair[pair_key(r[C.VIDEO_ID], r[C.SHOT], r[C.PAIR])]
                if C.is_failure_mark(new.get(C.FAILED_STAGE)):
                    self._failed(r, new, old[id(r)])
                    continue
                r.update({c: new.get(c) for c in self.columns})
                r[RERUN] = [*r[RERUN], self.name]
                for d in self.readers:
                    if STAGE_INPUTS[d][self.name](r) != before[id(r)][d] and d not in r[STALE]:
                        r[STALE] = [*r[STALE], d]
        return C.rows_to_batch(rows)

    def _failed(self, row: dict[str, Any], new: dict[str, Any], old_label: dict[str, Any]) -> None:
        reason = new[C.FAILED_REASON]
        if kind_of(reason) == TRANSIENT:  # the world failed: retried by the next run of the command
            row.update({c: new.get(c) for c in C.FAILURE_COLUMNS})
            return
        row.update(old_label)  # the input is bad for the new model: the pair keeps its old label
        row[KEPT] = json.dumps([*json.loads(row[KEPT]), {"stage": self.name, "reason": reason,
                                                         "detail": new.get(C.FAILED_DETAIL)}])
