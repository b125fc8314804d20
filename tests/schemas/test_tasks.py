"""The task index is stable forever: a renumbering or rename must fail here."""
import pytest

from schemas.tasks import TASK_BY_ID, TASKS, ImageKind, Role, input_slots, task

PINNED = {
    0: "text_to_image",
    1: "instruction_edit",
    2: "multi_object_customization",
    3: "object_insertion",
    4: "depth_to_image",
    5: "edge_to_image",
    6: "depth_estimation",
    7: "edge_detection",
    8: "referring_segmentation",
}


def test_every_id_name_pair_is_pinned():
    assert {t.id: t.name for t in TASKS} == PINNED


def test_ids_are_unique_and_dense_in_table_order():
    assert [t.id for t in TASKS] == sorted({t.id for t in TASKS})


def test_roles_follow_design_table():
    assert [s.role for s in TASK_BY_ID[3].inputs] == [Role.asset, Role.canvas]
    assert TASK_BY_ID[4].inputs[0].role is Role.control and TASK_BY_ID[4].inputs[0].kind is ImageKind.depth16
    assert TASK_BY_ID[6].target is ImageKind.depth16
    assert TASK_BY_ID[8].target is ImageKind.mask
    assert TASK_BY_ID[0].inputs == ()


def test_asset_slots_expand_for_customization_only():
    assert len(input_slots(TASK_BY_ID[2], 3)) == 3
    assert len(input_slots(TASK_BY_ID[3], 3)) == 2


def test_lookup_by_id_name_or_digit_string():
    assert task(5).name == task("edge_to_image").name == task("5").name
    with pytest.raises(KeyError, match="valid tasks: 0=text_to_image"):
        task("no_such_task")
