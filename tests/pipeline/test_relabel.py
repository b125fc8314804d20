"""relabel of depth with a different tiny model changes only depth members and provenance."""
from __future__ import annotations

import pytest

from datagen.config import from_dict
from datagen.io.reader import iter_samples
from datagen.io.storage import Location
from datagen.io.tables import read_manifest
from datagen.io.validate import validate
from datagen.pipeline.config import PipelineConfig
from datagen.pipeline.relabel import relabel
from tests.pipeline.conftest import tiny_config_dict

pytestmark = pytest.mark.slow
DEPTH_TASKS = {"depth_to_image": "in0.png", "depth_estimation": "target.png"}


def test_relabel_depth_changes_only_depth(tmp_path, tiny_models, reference_run):
    src, _ = reference_run
    cfg = from_dict(PipelineConfig, tiny_config_dict(tiny_models, depth={"model": tiny_models["depth_v2"]}))
    out = tmp_path / "v2"
    summary = relabel(str(src), str(out), ["depth"], cfg)
    assert validate(str(out)).ok
    before = {s.key: s for s in iter_samples(str(src))}
    after = {s.key: s for s in iter_samples(str(out))}
    assert set(before) == set(after)
    n_depth = 0
    for key, new in after.items():
        old = before[key]
        depth_member = DEPTH_TASKS.get(new.record.task)
        for member, data in new.media.items():
            if member == depth_member:
                assert data != old.media[member]  # recomputed with the other model
            else:
                assert data == old.media[member]  # every other member byte for byte
        if depth_member:
            n_depth += 1
            assert new.record.labels["depth"].model_id == tiny_models["depth_v2"]
            assert new.record.labels["depth"].revision != old.record.labels["depth"].revision
            assert {k: v for k, v in new.record.labels.items() if k != "depth"} == \
                   {k: v for k, v in old.record.labels.items() if k != "depth"}
        else:
            assert new.record == old.record
    assert summary.samples_changed["depth"] == n_depth > 0
    manifest = read_manifest(Location.parse(str(out))).to_pylist()
    for row in manifest:
        changed = row["task"] in DEPTH_TASKS
        assert row["changed_labels"] == (["depth"] if changed else [])
        assert [p["model_id"] for p in row["previous_labels"]] == ([tiny_models["depth"]] if changed else [])
        assert row["dataset_version"] == 2
    # unchanged shards are copied whole
    for task in ("instruction_edit", "edge_detection"):
        for tar in (src / "shards" / task).glob("*.tar"):
            assert (out / "shards" / task / tar.name).read_bytes() == tar.read_bytes()

    # --only-stale against the same new model: nothing is stale any more
    again = relabel(str(out), str(tmp_path / "v3"), ["depth"], cfg, only_stale=True)
    assert sum(again.samples_changed.values()) == 0
    assert validate(str(tmp_path / "v3")).ok

    # resumable: a rerun on a finished output does nothing but skip
    rerun = relabel(str(src), str(out), ["depth"], cfg)
    assert rerun.shards_skipped_done == summary.shards_copied + summary.shards_relabelled


def test_relabel_edges_with_new_thresholds(tmp_path, tiny_models, reference_run):
    src, _ = reference_run
    cfg = from_dict(PipelineConfig, tiny_config_dict(tiny_models, edges={"sigma": 0.9}))
    out = tmp_path / "edges-v2"
    summary = relabel(str(src), str(out), ["edges"], cfg)
    assert validate(str(out)).ok
    before = {s.key: s for s in iter_samples(str(src), tasks=["edge_to_image", "edge_detection"])}
    after = {s.key: s for s in iter_samples(str(out), tasks=["edge_to_image", "edge_detection"])}
    member = {"edge_to_image": "in0.png", "edge_detection": "target.png"}
    changed = 0
    for key, new in after.items():
        m = member[new.record.task]
        changed += new.media[m] != before[key].media[m]
        assert new.record.labels["edges"].params["sigma"] == 0.9
        assert {k: v for k, v in new.media.items() if k != m} == {k: v for k, v in before[key].media.items() if k != m}
    assert changed > 0 and summary.samples_changed["edges"] == len(after)
