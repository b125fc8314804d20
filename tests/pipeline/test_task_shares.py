"""Per-task quotas: shares met within one sample, deterministic, pairs record what was dropped."""
import json
import random

import pytest

from datagen import UserError, task_shares
from datagen.io.synthetic import make_labelled_pair_row
from schemas import columns as C
from stages.assemble import AssembleConfig, AssembleStage

SHARES = {"instruction_edit": 0.5, "text_to_image": 0.2, "depth_estimation": 0.2, "edge_detection": 0.1}


def synthetic_candidates(n_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """Every pair offers text_to_image and instruction_edit; depth and edge samples only some pairs."""
    rng = random.Random(seed)
    out = []
    for p in range(n_pairs):
        tasks = ["text_to_image", "instruction_edit", "object_insertion"]
        tasks += [t for t in ("depth_estimation", "edge_detection") if rng.random() < 0.7]
        out += [(f"vid_s0000_p{p:04d}_{t}", t) for t in tasks]
    return out


def test_shares_are_met_within_one_sample_and_unnamed_tasks_are_not_limited():
    candidates = synthetic_candidates(200)
    keep = task_shares.select(candidates, SHARES)
    offered = {t: sum(1 for _, tt in candidates if tt == t) for t in {t for _, t in candidates}}
    total = sum(offered[t] for t in SHARES)
    for task, share in SHARES.items():
        written = sum(1 for k, t in candidates if t == task and k in keep)
        assert abs(written - min(offered[task], share * total)) <= 1, (task, written, share * total)
    assert all(k in keep for k, t in candidates if t == "object_insertion")  # no share named: all written


def test_the_choice_does_not_depend_on_input_order():
    candidates = synthetic_candidates(50)
    shuffled = candidates[:]
    random.Random(1).shuffle(shuffled)
    assert task_shares.select(candidates, SHARES) == task_shares.select(shuffled, SHARES)


def test_report_gives_the_shortfall_of_a_task_short_of_supply():
    report = task_shares.report({"instruction_edit": 10, "text_to_image": 40}, {"text_to_image": 50},
                                {"instruction_edit": 0.5, "text_to_image": 0.5})
    # 100 offered: each task's quota is 50; instruction_edit had only 10
    assert report["instruction_edit"]["shortfall"] == 40 and report["text_to_image"]["shortfall"] == 10
    assert report["text_to_image"]["dropped_over_share"] == 50 and report["instruction_edit"]["share"] == 0.2


def test_assemble_drops_samples_over_share_and_records_them_on_the_pair():
    rows = [make_labelled_pair_row(pair=p) for p in range(8)]
    shares = {"instruction_edit": 0.75, "text_to_image": 0.25}
    cfg = AssembleConfig(tasks={"instruction_edit": 1.0, "text_to_image": 1.0, "depth_estimation": 1.0},
                         task_shares=shares)
    pairs = C.batch_to_rows(AssembleStage(cfg)(C.rows_to_batch(rows)))  # one row per pair, its samples inside
    made = [json.loads(rec)["task"] for p in pairs for rec in p[C.SAMPLE_RECORDS]]
    # 16 candidates of the named tasks: instruction_edit may write all 8 (quota 12), text_to_image 4
    assert made.count("instruction_edit") == 8 and made.count("text_to_image") == 4
    assert made.count("depth_estimation") == 8  # not named: not limited
    over = [p for p in pairs if json.loads(p[C.SKIPPED]).get("text_to_image") == "over_share"]
    assert len(over) == 4 and all("text_to_image" not in json.loads(p[C.MADE]) for p in over)
    assert all(len(p[C.SAMPLE_KEYS]) == len(p[C.SAMPLE_RECORDS]) == len(p[C.SAMPLE_MEMBER_DATA]) for p in pairs)


def test_bad_shares_are_a_user_error():
    with pytest.raises(UserError, match="task_shares.painting"):
        AssembleConfig(task_shares={"painting": 1.0})
    with pytest.raises(UserError, match="all be 0"):
        AssembleConfig(task_shares={"instruction_edit": 0.0})
