"""SAM2's grid-fallback objects have no name: no task whose prompt names the object uses them."""
from __future__ import annotations

import json

from datagen.io.synthetic import make_labelled_pair_row
from schemas import columns as C
from schemas.sample import SampleRecord
from stages.assemble import AssembleConfig, AssembleStage


def _assemble(row):
    return C.batch_to_rows(AssembleStage(AssembleConfig())(C.rows_to_batch([row])))


def _records(rows) -> dict[str, SampleRecord]:
    recs = [SampleRecord.from_json(rec) for r in rows for rec in r[C.SAMPLE_RECORDS]]  # one row per pair
    return {r.task: r for r in recs}


def _unnamed(row, keep_first_name: bool = False):
    segs = json.loads(row[C.SEGMENTS])
    for i, s in enumerate(segs):
        if i or not keep_first_name:
            s["name"] = None  # what the segment stage writes for a grid mask
    row[C.SEGMENTS] = json.dumps(segs)
    return row


def test_grid_objects_give_no_referring_segmentation_or_insertion_only_nameless_tasks():
    row = _unnamed(make_labelled_pair_row(n_objects=2))
    rows = _assemble(row)
    skipped = json.loads(rows[0][C.SKIPPED])
    assert skipped == {"object_insertion": "no_named_object", "referring_segmentation": "no_named_object"}
    samples = _records(rows)
    customization = samples["multi_object_customization"]  # assets need no name: caption of B stays the prompt
    assert customization.prompt.base == json.loads(row[C.CAPTION])["caption_b"].rstrip()
    assert all(i.label == "" for i in customization.prompt.images)
    assert "text_to_image" in samples and "depth_estimation" in samples


def test_a_named_object_among_grid_ones_is_the_one_referred_to():
    row = _unnamed(make_labelled_pair_row(n_objects=2), keep_first_name=True)
    name = json.loads(row[C.SEGMENTS])[0]["name"]
    samples = _records(_assemble(row))
    assert samples["referring_segmentation"].prompt.base == f"segment the {name}"
    assert samples["object_insertion"].prompt.base == f"insert the {name}"
