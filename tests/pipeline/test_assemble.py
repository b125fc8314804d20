import json

import numpy as np
import pytest

from datagen import UserError
from datagen.cutouts import NEUTRAL_GRAY
from datagen.io.synthetic import make_labelled_pair_row
from datagen.media import decode_image
from schemas import columns as C
from schemas.sample import SampleRecord
from schemas.tasks import TASKS, ImageKind, Role
from stages.assemble import AssembleConfig, AssembleStage


def assemble(row, **cfg):
    out = AssembleStage(AssembleConfig(**cfg))(C.rows_to_batch([row]))
    return C.batch_to_rows(out)


def samples_of(rows):
    """{task_id: {"key", "record_json", "member_names", "member_data"}} of the one pair row."""
    (row,) = rows
    out = {}
    for key, rec, names, data in zip(row[C.SAMPLE_KEYS], row[C.SAMPLE_RECORDS], row[C.SAMPLE_MEMBER_NAMES],
                                     row[C.SAMPLE_MEMBER_DATA]):
        out[SampleRecord.from_json(rec).task_id] = {"key": key, "record_json": rec, "member_names": names,
                                                    "member_data": data}
    return out


def test_one_pair_gives_one_row_with_every_task():
    rows = assemble(make_labelled_pair_row())
    assert len(rows) == 1 and json.loads(rows[0][C.SKIPPED]) == {} and rows[0][C.PAIR_KEY] == "vidA_s0000_p0000"
    assert sorted(samples_of(rows)) == [t.id for t in TASKS]
    assert json.loads(rows[0][C.MADE]) == [t.name for t in TASKS] and json.loads(rows[0][C.SAMPLE_FAILURES]) == []


def test_a_sample_that_fails_to_build_is_reported_and_its_siblings_still_made(monkeypatch):
    from stages import assemble as A

    real = A._PairContext.build
    monkeypatch.setattr(A._PairContext, "build", lambda self, task, key: (_ for _ in ()).throw(ValueError("broken mask"))
                        if task == "object_insertion" else real(self, task, key))
    rows = assemble(make_labelled_pair_row())
    (failure,) = json.loads(rows[0][C.SAMPLE_FAILURES])
    assert failure["reason"] == "assemble_error" and failure["key"].endswith("_t03") and "broken mask" in failure["detail"]
    assert len(samples_of(rows)) == len(TASKS) - 1


def test_media_from_earlier_stages_is_reused_byte_for_byte():
    row = make_labelled_pair_row()
    s = samples_of(assemble(row))
    media = lambda r: dict(zip(r["member_names"], r["member_data"]))  # noqa: E731
    assert media(s[1]) == {"in0.jpg": row[C.IMAGE_A], "target.jpg": row[C.IMAGE_B]}
    assert media(s[4]) == {"in0.png": row[C.DEPTH_B], "target.jpg": row[C.IMAGE_B]}
    assert media(s[6]) == {"in0.jpg": row[C.IMAGE_A], "target.png": row[C.DEPTH_A]}
    assert media(s[7])["target.png"] == row[C.EDGES_A]
    assert media(s[8])["target.png"] == row[C.MASKS_A][0]


def test_roles_order_and_prompts():
    s = samples_of(assemble(make_labelled_pair_row()))
    rec = {t: SampleRecord.from_json(r["record_json"]) for t, r in s.items()}
    assert rec[1].prompt.base == "move the objects to the right"
    assert [i.role for i in rec[3].prompt.images] == [Role.asset, Role.canvas]
    assert [i.role for i in rec[2].prompt.images] == [Role.asset, Role.asset]
    assert rec[4].prompt.images[0].role is Role.control and rec[4].prompt.images[0].kind is ImageKind.depth16
    assert rec[3].prompt.base == "insert the red box"
    assert rec[8].prompt.base == "segment the red box"
    assert "red box" in rec[2].prompt.base and "blue cup" in rec[2].prompt.base
    # context only from measured facts: gap 1.2 s, static camera, two boxes that moved 6 px
    assert rec[1].prompt.context == ("real video frames; the canvas is the earlier frame; the target is the same "
                                     "shot 1.2 s later; the camera is still; 2 tracked objects move")
    assert set(rec[6].labels) == {"depth"} and set(rec[2].labels) == {"caption", "segment"}


def test_assets_are_cut_out_on_neutral_background_and_canvas_blanks_the_object():
    row = make_labelled_pair_row()
    s = samples_of(assemble(row))[3]
    media = dict(zip(s["member_names"], s["member_data"]))
    asset, canvas = decode_image(media["in0.jpg"]), decode_image(media["in1.jpg"])
    assert asset.shape[0] < 64 and asset.shape[1] < 96  # cropped to the object
    seg = json.loads(row[C.SEGMENTS])[0]
    x0, y0, x1, y1 = seg["box_b"]
    blank = canvas[y0 + 2:y1 - 2, x0 + 2:x1 - 2].astype(int)
    assert np.abs(blank - NEUTRAL_GRAY).max() <= 8  # JPEG tolerance


def test_objects_missing_means_tasks_skipped_with_reason():
    rows = assemble(make_labelled_pair_row(n_objects=1))
    skipped = json.loads(rows[0][C.SKIPPED])
    assert skipped == {"multi_object_customization": "too_few_objects"}
    assert 3 in samples_of(rows) and 8 in samples_of(rows)


def test_task_ratios_are_deterministic_per_key():
    rows = [make_labelled_pair_row(pair=p) for p in range(40)]
    pick = lambda: [k for row in rows for k in assemble(row, tasks={"instruction_edit": 0.5})[0][C.SAMPLE_KEYS]]  # noqa: E731
    first = pick()
    assert 8 <= len(first) <= 32 and first == pick()


def test_failed_rows_pass_through_untouched():
    row = make_labelled_pair_row()
    row.update({C.FAILED_STAGE: "caption", C.FAILED_REASON: "invalid_json", C.FAILED_DETAIL: "x"})
    rows = assemble(row)
    assert len(rows) == 1 and rows[0][C.FAILED_REASON] == "invalid_json"


def test_bad_task_name_is_a_user_error():
    with pytest.raises(UserError, match="unknown task 'edit'"):
        AssembleConfig(tasks={"edit": 1.0})


def test_context_uses_pair_facts_from_the_pairs_stage():
    from datagen.prompts import context_prompt

    facts = {"gap_s": 2.04, "camera_motion": "pan_left", "object_motion_area": 0.12}
    assert context_prompt("instruction_edit", facts) == (
        "real video frames; the canvas is the earlier frame; the target is the same shot 2.0 s later; "
        "the camera pans left; objects move")
    still = {"gap_s": 1.0, "camera_motion": "static", "object_motion_area": 0.001}
    assert context_prompt("instruction_edit", still).endswith("1.0 s later; the camera is still")
