"""The same shards load with webdataset, Hugging Face datasets and Ray Data."""
import pytest
import webdataset as wds

from schemas.tasks import TASKS
from tests.io.conftest import PER_TASK


def test_webdataset_reads_every_sample(dataset):
    root, samples = dataset
    urls = sorted(str(p) for p in (root / "shards").rglob("*.tar"))
    keys = [s["__key__"] for s in wds.WebDataset(urls, shardshuffle=False)]
    assert sorted(keys) == sorted(s.key for s in samples)


@pytest.mark.parametrize("task_name", ["object_insertion", "depth_estimation", "multi_object_customization"])
def test_hf_datasets_loads_one_task_directory(dataset, task_name):
    datasets = pytest.importorskip("datasets")
    root, _ = dataset
    files = sorted(str(p) for p in (root / "shards" / task_name).glob("*.tar"))
    ds = datasets.load_dataset("webdataset", data_files={"train": files}, split="train")
    assert len(ds) == PER_TASK
    row = ds[0]
    assert row["json"]["task"] == task_name
    target = next(k for k in row if k.startswith("target."))
    assert row[target].size == (64, 48)


def test_ray_data_reads_shards(dataset):
    ray = pytest.importorskip("ray")
    root, samples = dataset
    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True)
    try:
        ds = ray.data.read_webdataset(str(root / "shards"), decoder=None)
        keys = sorted(r["__key__"] for r in ds.iter_rows())
    finally:
        ray.shutdown()
    assert keys == sorted(s.key for s in samples)
    assert len(keys) == len(TASKS) * PER_TASK
