"""Re-labels of the reference run: each changes only what derives from the labels it re-runs.

Every re-label here is a Ray Data job over the reference run's pair store; one Ray
instance serves the whole module.
"""
from __future__ import annotations

import hashlib
import json

import pytest

from datagen.io.pair_store import changes, iter_pairs, read_pair_index
from datagen.io.reader import iter_samples
from datagen.io.storage import Location
from datagen.io.tables import read_manifest
from datagen.io.validate import validate
from datagen.pipeline.relabel import dataset_config, relabel
from schemas.labels import TASK_LABELS, tasks_depending_on

pytestmark = pytest.mark.slow
CUTOUT_MEMBERS = {"multi_object_customization": {"in0.jpg", "in1.jpg"}, "object_insertion": {"in0.jpg", "in1.jpg"},
                  "referring_segmentation": {"target.png"}}
LABEL_MEMBERS = {"depth_to_image": "in0.png", "depth_estimation": "target.png",
                 "edge_to_image": "in0.png", "edge_detection": "target.png"}


@pytest.fixture(scope="module", autouse=True)
def one_ray_for_the_module():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def samples(path, tasks=None) -> dict:
    return {s.key: s for s in iter_samples(str(path), tasks)}


def pair_docs(path) -> dict[str, dict]:
    loc = Location.parse(str(path))
    out = {}
    for tar in sorted(set(read_pair_index(loc).column("shard").to_pylist())):
        for members in iter_pairs(loc, tar):
            doc = json.loads(members["json"])
            out[doc["pair_key"]] = {**doc, "_members": members}
    return out


def tar_digests(path, task: str) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in (path / "shards" / task).glob("*.tar")}


@pytest.fixture(scope="module")
def caption_v2(reference_run, tiny_models, tmp_path_factory):
    src, _ = reference_run
    out = tmp_path_factory.mktemp("relabel") / "caption-v2"
    cfg = dataset_config(str(src), None, [f"caption.model={tiny_models['caption_v2']}"])
    return src, out, relabel(str(src), str(out), ["caption"], cfg)


def test_caption_relabel_with_another_vlm_changes_only_caption_json(caption_v2, tiny_models):
    src, out, summary = caption_v2
    report = validate(str(out))
    assert report.ok, report.problems
    assert summary.plan == ["caption", "segment"]  # segment re-runs where the objects change: here none do
    before, after = samples(src), samples(out)
    assert set(before) == set(after)
    caption_tasks = set(tasks_depending_on(["caption"]))
    json_changed = 0
    for key, new in after.items():
        old = before[key]
        assert new.media == old.media  # no member derives from the caption alone: all bytes kept
        if new.record.task in caption_tasks:
            assert new.record.labels["caption"].model_id == tiny_models["caption_v2"]
            assert {k: v for k, v in new.record.labels.items() if k != "caption"} == \
                   {k: v for k, v in old.record.labels.items() if k != "caption"}
            json_changed += new.record.prompt.base != old.record.prompt.base
        else:
            assert new.record == old.record
    assert json_changed > 0
    for task in set(TASK_LABELS) - caption_tasks:  # shards no caption feeds: copied byte for byte
        assert tar_digests(out, task) == tar_digests(src, task)
    for row in read_manifest(Location.parse(str(out))).to_pylist():
        rebuilt = row["task"] in caption_tasks
        assert row["changed_labels"] == (["caption"] if rebuilt else [])
        assert [p["model_id"] for p in row["previous_labels"]] == ([tiny_models["caption"]] if rebuilt else [])
        assert row["dataset_version"] == 2
    assert changes(Location.parse(str(out))) == {
        "added": [], "removed": [], "changed": sorted(k for k, s in after.items() if s.record.task in caption_tasks)}
    old_pairs, new_pairs = pair_docs(src), pair_docs(out)
    assert set(old_pairs) == set(new_pairs)
    for pk, new in new_pairs.items():
        old = old_pairs[pk]
        assert new["history"]["rerun"] == ["caption"]
        assert new["history"]["previous_labels"]["caption"] == old["labels"]["caption"]
        assert new["segments"] == old["segments"] and new["facts"] == old["facts"]
        assert {m: d for m, d in new["_members"].items() if m != "json"} == \
               {m: d for m, d in old["_members"].items() if m != "json"}


def test_segment_relabel_changes_only_masks_and_cutouts(reference_run, tiny_models, tmp_path):
    src, _ = reference_run
    out = tmp_path / "segment-v2"
    cfg = dataset_config(str(src), None, [f"segment.model={tiny_models['segment_v2']}"])
    summary = relabel(str(src), str(out), ["segment"], cfg)
    assert validate(str(out)).ok
    assert summary.plan == ["segment"] and set(summary.tasks_rebuilt) == set(CUTOUT_MEMBERS)
    before, after = samples(src), samples(out)
    delta = changes(Location.parse(str(out)))
    assert set(after) == (set(before) - set(delta["removed"])) | set(delta["added"])
    members_changed = 0
    for key in set(before) & set(after):
        old, new = before[key], after[key]
        differ = {m for m in new.media if new.media[m] != old.media[m]}
        assert differ <= CUTOUT_MEMBERS.get(new.record.task, set())
        members_changed += len(differ)
        if new.record.task not in CUTOUT_MEMBERS:
            assert new.record == old.record
    assert members_changed > 0
    for task in set(TASK_LABELS) - set(CUTOUT_MEMBERS):
        assert tar_digests(out, task) == tar_digests(src, task)


def test_depth_and_edges_relabel_then_only_stale_finds_nothing(reference_run, tiny_models, tmp_path):
    src, _ = reference_run
    cfg = dataset_config(str(src), None, [f"depth.model={tiny_models['depth_v2']}", "edges.sigma=0.9"])
    out = tmp_path / "v2"
    summary = relabel(str(src), str(out), ["depth", "edges"], cfg)
    assert validate(str(out)).ok
    before, after = samples(src), samples(out)
    assert set(before) == set(after)
    for key, new in after.items():
        old = before[key]
        label_member = LABEL_MEMBERS.get(new.record.task)
        for member, data in new.media.items():
            assert (data != old.media[member]) == (member == label_member)  # only the map itself is new
        if new.record.task.startswith("depth"):
            assert new.record.labels["depth"].model_id == tiny_models["depth_v2"]
        if new.record.task.startswith("edge"):
            assert new.record.labels["edges"].params["sigma"] == 0.9
    assert summary.samples_changed == {"depth": len(samples(src, ["depth_to_image", "depth_estimation"])),
                                       "edges": len(samples(src, ["edge_to_image", "edge_detection"]))}
    again = relabel(str(out), str(tmp_path / "v3"), ["depth", "edges"], cfg, only_stale=True)
    assert sum(again.samples_changed.values()) == 0  # nothing is stale against the same models
    assert samples(tmp_path / "v3").keys() == after.keys()
    assert validate(str(tmp_path / "v3")).ok
