"""Shot boundaries and pairs on edited videos with known boundaries of every kind (datagen/video/evalset.py)."""
from __future__ import annotations

import dataclasses
import json
from collections import Counter

from datagen.video import evalset
from datagen.video.pairing import ContinuityConfig, PairingConfig
from schemas.columns import FAILED_STAGE, FRAME_A, FRAME_B, VIDEO_URI, batch_to_rows, rows_to_batch
from stages.ingest import IngestStage
from stages.pairs import PairsConfig, PairsStage
from stages.shots import SHOTS, ShotsStage, load_shots


def test_the_set_has_every_kind_and_gop(edited_videos):
    kinds = Counter(b.kind for v in edited_videos for b in v.boundaries)
    assert set(kinds) == set(evalset.CUT_KINDS + evalset.GRADUAL_KINDS), kinds
    assert {v.gop for v in edited_videos} == set(evalset.GOPS)


def shots_rows(videos):
    batch = rows_to_batch([{VIDEO_URI: v.path} for v in videos])
    for stage in (IngestStage(), ShotsStage()):
        batch = stage(batch)
    return batch_to_rows(batch)


def test_every_boundary_kind_is_found(edited_videos):
    rows = shots_rows(edited_videos)
    per_kind: dict[str, list[int]] = {}
    false = 0
    for v, row in zip(edited_videos, rows):
        assert row[FAILED_STAGE] is None, row
        shots = load_shots(row)[0]
        found, extra = evalset.match(v.boundaries, evalset.found_boundaries(shots))
        false += len(extra)
        for kind, (hit, total) in found.items():
            per_kind.setdefault(kind, [0, 0])
            per_kind[kind][0] += hit
            per_kind[kind][1] += total
    hard = [sum(per_kind[k][i] for k in evalset.CUT_KINDS) for i in (0, 1)]
    gradual = [sum(per_kind[k][i] for k in evalset.GRADUAL_KINDS) for i in (0, 1)]
    assert hard[0] >= hard[1] - 1, per_kind  # bench/shots.py measures the rates on the full set
    assert gradual[0] >= gradual[1] - 2, per_kind
    assert all(hit > 0 for hit, _ in per_kind.values()), per_kind
    assert false <= 1, per_kind


def test_no_pair_spans_a_boundary_with_the_cap_lifted(edited_videos):
    rows = shots_rows(edited_videos)
    pairs = PairsStage(PairsConfig(pairing=PairingConfig(max_pairs_per_video=10**6)))
    out = batch_to_rows(pairs(rows_to_batch(rows)))
    by_video = {v.path: [] for v in edited_videos}
    for r in out:
        assert r[FAILED_STAGE] is None, r
        by_video[r[VIDEO_URI]].append((r[FRAME_A], r[FRAME_B]))
    for v in edited_videos:
        assert by_video[v.path], v.path
        assert evalset.spanning(v.boundaries, by_video[v.path]) == 0, v.path
    facts = [json.loads(r["facts_json"]) for r in out]
    assert all(f["shot_detector"] == {"model": "builtin"} for f in facts)
    assert all(f["continuity_step_warp_error"] <= 0.045 for f in facts)  # the worst step is recorded


def test_the_continuity_check_alone_rejects_pairs_over_missed_boundaries(edited_videos):
    """With the detector blinded (no boundary found), the pairs that would span the edits are discontinuous."""
    rows = shots_rows(edited_videos[:1])
    data = json.loads(rows[0][SHOTS])
    shots = data["shots"]
    data["shots"] = [dict(shots[0], end_frame=shots[-1]["end_frame"], end_s=shots[-1]["end_s"])]
    data["cuts"], data["transitions"] = [], []
    data["unusable"] = {k: v for k, v in data["unusable"].items() if v != "transition"}
    rows[0][SHOTS] = json.dumps(data)
    cfg = PairingConfig(max_pairs_per_video=10**6, max_failed_tries_per_shot=10**6, max_pairs_per_shot=10**6)
    off = ContinuityConfig(max_step_warp_error=1.0, max_frame_change=10.0, spike_min_change=10.0)

    def pairs(pairing):
        out = batch_to_rows(PairsStage(PairsConfig(pairing=pairing))(rows_to_batch([dict(r) for r in rows])))
        return [(r[FRAME_A], r[FRAME_B]) for r in out if r[FAILED_STAGE] is None]
    checked, unchecked = pairs(cfg), pairs(dataclasses.replace(cfg, continuity=off))
    assert checked
    assert evalset.spanning(edited_videos[0].boundaries, unchecked) > 0  # what the check is there to stop
    assert evalset.spanning(edited_videos[0].boundaries, checked) == 0
