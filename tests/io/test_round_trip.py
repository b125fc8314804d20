import json

import pyarrow.dataset as pads

from datagen.io.reader import iter_samples
from datagen.io.shards import DatasetWriter, ShardLimits
from datagen.io.synthetic import make_sample
from datagen.io.validate import validate
from schemas.tasks import TASKS
from tests.io.conftest import PER_TASK


def test_every_task_round_trips_bytes_and_json(dataset):
    root, samples = dataset
    assert validate(str(root)).ok
    back = {s.key: s for s in iter_samples(str(root))}
    assert set(back) == {s.key for s in samples}
    for s in samples:
        got = back[s.key]
        assert got.record == s.record
        assert got.media == s.media  # media bytes identical


def test_layout_is_one_directory_per_task_bounded_by_count(dataset):
    root, _ = dataset
    for t in TASKS:
        tars = sorted((root / "shards" / t.name).glob("*.tar"))
        assert [p.name for p in tars] == ["000000.tar", "000001.tar"]  # 4 samples, max 3 per shard


def test_shards_bounded_by_bytes(tmp_path):
    max_bytes = 40_000  # samples are ~10 kB: a few per shard
    with DatasetWriter(str(tmp_path), limits=ShardLimits(max_samples=1000, max_bytes=max_bytes)) as w:
        for p in range(12):
            w.add(make_sample(1, pair=p))
    tars = list((tmp_path / "shards" / "instruction_edit").glob("*.tar"))
    assert len(tars) >= 3
    assert all(t.stat().st_size <= max_bytes for t in tars), [t.stat().st_size for t in tars]
    assert validate(str(tmp_path)).ok


def test_filter_by_task(dataset):
    root, _ = dataset
    got = list(iter_samples(str(root), tasks=["depth_estimation", 8]))
    assert sorted({s.record.task_id for s in got}) == [6, 8]
    assert len(got) == 2 * PER_TASK


def test_manifest_and_failures_read_as_one_dataset(dataset):
    root, samples = dataset
    manifest = pads.dataset(str(root / "manifest"), format="parquet").to_table()
    assert manifest.num_rows == len(samples)
    row = manifest.filter(pads.field("task") == "object_insertion").slice(0, 1).to_pylist()[0]
    assert {m["name"].split(".", 1)[1] for m in row["members"]} == {"json", "in0.jpg", "in1.jpg", "target.jpg"}
    assert row["shard"].startswith("shards/object_insertion/")
    for col in ("video_uri", "video_id", "frame_a", "frame_b", "t_a_s", "t_b_s", "labels"):
        assert row[col] is not None
    failures = pads.dataset(str(root / "failures"), format="parquet").to_table().to_pylist()
    assert failures == [{"input_uri": "file:///v/broken.mp4", "video_id": None, "key": None, "stage": "probe",
                         "reason": "not_a_video", "detail": "no streams"}]


def test_same_inputs_give_identical_shards(tmp_path):
    for d in ("a", "b"):
        with DatasetWriter(str(tmp_path / d)) as w:
            for p in range(3):
                w.add(make_sample(2, pair=p))
    a = (tmp_path / "a/shards/multi_object_customization/000000.tar").read_bytes()
    b = (tmp_path / "b/shards/multi_object_customization/000000.tar").read_bytes()
    assert a == b


def test_stats_cli_prints_tasks_and_drops(dataset, capsys):
    from typer.testing import CliRunner

    from datagen.cli import app

    root, _ = dataset
    res = CliRunner().invoke(app, ["stats", str(root)])
    assert res.exit_code == 0, res.output
    assert "object_insertion" in res.output and "not_a_video=1" in res.output


def test_json_member_is_what_the_manifest_sizes(dataset):
    root, _ = dataset
    s = next(iter_samples(str(root), tasks=[0]))
    assert json.loads(s.record.to_json())["key"] == s.key
