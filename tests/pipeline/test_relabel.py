"""Re-labels of the reference run: each changes only what derives from the labels it re-runs.

Every re-label here is a Ray Data job over the reference run's pair store; one Ray
instance serves the whole module.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.io.pair_store import changes, iter_pairs, read_pair_index
from datagen.io.reader import iter_samples
from datagen.io.storage import Location
from datagen.io.tables import read_manifest
from datagen.io.validate import validate
from datagen.pipeline.progress import read_progress
from datagen.pipeline.relabel import dataset_config, relabel
from schemas.labels import TASK_LABELS, tasks_depending_on
from schemas.members import pair_of
from tests.caption.fake_openai import FakeOpenAI
from tests.pipeline.test_run_e2e import _wait_for

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
    # the judge re-scores every new instruction; segment re-runs where the objects change: here none do
    assert summary.plan == ["caption", "verify", "segment"]
    before, after = samples(src), samples(out)
    assert set(before) == set(after)
    caption_tasks = set(tasks_depending_on(["caption"]))
    json_changed = 0
    for key, new in after.items():
        old = before[key]
        assert new.media == old.media  # no member derives from the caption alone: all bytes kept
        if new.record.task in caption_tasks:
            # the judge has no model of its own here: it follows the captioner, so it re-ran with it
            assert new.record.labels["caption"].model_id == tiny_models["caption_v2"]
            assert new.record.labels["verify"].model_id == tiny_models["caption_v2"]
            assert {k: v for k, v in new.record.labels.items() if k not in ("caption", "verify")} == \
                   {k: v for k, v in old.record.labels.items() if k not in ("caption", "verify")}
            json_changed += new.record.prompt.base != old.record.prompt.base
        else:
            assert new.record == old.record
    assert json_changed > 0
    for task in set(TASK_LABELS) - caption_tasks:  # shards no caption feeds: copied byte for byte
        assert tar_digests(out, task) == tar_digests(src, task)
    for row in read_manifest(Location.parse(str(out))).to_pylist():
        rebuilt = row["task"] in caption_tasks
        # changed_labels names the labels a task's record carries (schemas/labels.record_labels): the
        # caption, and the judge's verdict on it, re-scored because the caption changed
        assert row["changed_labels"] == (["caption", "verify"] if rebuilt else [])
        assert [p["model_id"] for p in row["previous_labels"]] == ([tiny_models["caption"]] * 2 if rebuilt else [])
        assert row["dataset_version"] == 2
    assert changes(Location.parse(str(out))) == {
        "added": [], "removed": [], "changed": sorted(k for k, s in after.items() if s.record.task in caption_tasks)}
    old_pairs, new_pairs = pair_docs(src), pair_docs(out)
    assert set(old_pairs) == set(new_pairs)
    for pk, new in new_pairs.items():
        old = old_pairs[pk]
        assert new["history"]["rerun"] == ["caption", "verify"]  # the judge re-scores the new instruction
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


def scripted_caption(body, n):
    """A new VLM that names two objects on pairs whose frame A has an even index, none elsewhere."""
    text = body["messages"][-1]["content"][-1]["text"]
    frame_a = int(re.search(r"frame_a: (\d+)", text).group(1))
    objects = [{"name": "red lamp", "box": [4, 4, 40, 40]}, {"name": "chair", "box": [44, 30, 80, 80]}]
    return 200, json.dumps({"caption_a": "a room", "caption_b": "the same room later", "differences": ["time"],
                            "instruction": "wait a moment", "edit_type": "other",
                            "objects": objects if frame_a % 2 == 0 else []})


@pytest.fixture(scope="module")
def cascade(reference_run, tmp_path_factory):
    src, _ = reference_run
    out = tmp_path_factory.mktemp("relabel") / "cascade"
    made_with = dataset_config(str(src))  # the judge keeps the dataset's model: only the captioner is scripted
    with FakeOpenAI(scripted_caption, lambda body: "all") as server:
        cfg = dataset_config(str(src), None, [f"verify.model={made_with.caption.model}",
                                              f"verify.backend={made_with.caption.backend}",
                                              "caption.backend=vllm-server", f"caption.endpoints=[{server.url}]",
                                              "caption.model=scripted-vlm", "caption.max_objects=2",
                                              "caption.max_text_chars=60", "caption.retry_backoff_s=0"])
        summary = relabel(str(src), str(out), ["caption"], cfg)
    return src, out, summary


def test_new_objects_in_a_caption_rerun_segment_for_that_pair_only(cascade):
    src, out, summary = cascade
    report = validate(str(out))
    assert report.ok, report.problems
    old_pairs, new_pairs = pair_docs(src), pair_docs(out)
    with_objects = {pk for pk, d in new_pairs.items() if d["caption"]["objects"]}
    assert 0 < len(with_objects) < len(new_pairs)  # the cascade is per pair
    for pk, new in new_pairs.items():
        old = old_pairs[pk]
        if pk in with_objects:
            assert new["history"]["rerun"] == ["caption", "verify", "segment"]
            assert {s["name"] for s in new["segments"]} <= {"red lamp", "chair"}
            assert new["labels"]["segment"] == old["labels"]["segment"]  # same SAM2, new prompts
        else:  # no objects before, none now: segment's input is unchanged, so are its masks
            assert new["history"]["rerun"] == ["caption", "verify"]
            assert new["segments"] == old["segments"]
            assert new["_members"]["masks_a.0.png"] == old["_members"]["masks_a.0.png"]
    before, after = samples(src), samples(out)
    delta = changes(Location.parse(str(out)))
    assert delta["added"] or delta["removed"]
    assert set(after) == (set(before) - set(delta["removed"])) | set(delta["added"])
    assert set(delta["changed"]) <= set(before) & set(after)
    referring = [s for s in after.values() if s.record.task == "referring_segmentation"
                 and pair_of(s.key) in with_objects]
    assert referring and all(s.record.prompt.base in ("segment the red lamp", "segment the chair") for s in referring)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["relabel"]["keys"] == {k: len(v) for k, v in delta.items()}
    assert list(stats["stages"])[:3] == ["pair store", "caption", "verify"]  # run's stage-yield table


def test_readers_load_every_task_directory_of_the_new_version(cascade):
    datasets = pytest.importorskip("datasets")
    import ray
    import webdataset as wds

    _, out, _ = cascade
    keys = sorted(read_manifest(Location.parse(str(out))).column("key").to_pylist())
    urls = sorted(str(p) for p in (out / "shards").rglob("*.tar"))
    assert sorted(s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)) == keys
    n = 0
    for task_dir in sorted((out / "shards").iterdir()):
        files = sorted(str(p) for p in task_dir.glob("*.tar"))
        ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train")
        assert {r["json"]["task"] for r in ds} == {task_dir.name}
        n += len(ds)
    assert n == len(keys)
    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    assert sorted(r["__key__"] for r in ray.data.read_webdataset(str(out / "shards"), decoder=None).iter_rows()) == keys


def test_relabel_resumes_after_sigkill_to_the_same_bytes(caption_v2, tiny_models, tmp_path):
    src, reference, _ = caption_v2
    out = tmp_path / "killed"
    # no --config: the dataset's own config.yaml, with the new model set on top
    cmd = [sys.executable, "-m", "datagen", "relabel", "--input", str(src), "--output", str(out), "--stages", "caption",
           "--set", f"caption.model={tiny_models['caption_v2']}", "--set", "write.min_rows_per_write=1",
           "--set", "caption.resources.batch_size=2", "--set", "assemble.resources.batch_size=2"]
    # several write tasks, each model stage's batches one by one: a kill lands between commits
    cmd += [a for s in ("caption", "verify", "segment") for a in ("--set", f"{s}.resources.batches_per_task=1")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        committed = lambda: [p for p in (out / "progress").glob("*commit.parquet")  # noqa: E731
                             if not p.name.startswith("copy-")]
        assert _wait_for(committed, proc), "the relabel finished before the kill point"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray workers, mid-job
        except ProcessLookupError:
            pass
        proc.wait(30)
    done_before = len(read_progress(Location.parse(str(out))))
    assert done_before < len(pair_docs(src))  # killed part way
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming" in res.stderr
    assert validate(str(out)).ok
    got, want = samples(out), samples(reference)
    assert got.keys() == want.keys()
    for key, s in got.items():
        assert s.record == want[key].record and s.media == want[key].media
    keys = read_manifest(Location.parse(str(out))).column("key").to_pylist()
    assert len(keys) == len(set(keys))
    assert {pk: {m: d for m, d in doc["_members"].items()} for pk, doc in pair_docs(out).items()} == \
           {pk: {m: d for m, d in doc["_members"].items()} for pk, doc in pair_docs(reference).items()}


def test_a_dataset_without_pair_store_is_readable_and_relabel_says_why_not(reference_run, tmp_path):
    src, _ = reference_run
    old = tmp_path / "old"
    shutil.copytree(src, old, ignore=shutil.ignore_patterns("pairs"))
    assert validate(str(old)).ok
    res = CliRunner().invoke(app, ["relabel", "--input", str(old), "--output", str(tmp_path / "v2"),
                                   "--stages", "caption"])
    line = " ".join(res.output.split())  # rich wraps the line at the terminal width
    assert res.exit_code == 2 and "Traceback" not in line
    assert "has no pair store" in line and "datagen run" in line
