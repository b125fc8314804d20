import pytest

from datagen.io.shards import DatasetWriter, ShardLimits
from datagen.io.synthetic import make_sample
from schemas.tasks import TASKS

PER_TASK = 4


def write_every_task(url: str, per_task: int = PER_TASK, limits: ShardLimits = ShardLimits(max_samples=3)) -> list:
    samples = [make_sample(t.id, video_id=f"vid{p % 2}", pair=p) for t in TASKS for p in range(per_task)]
    with DatasetWriter(url, limits=limits) as w:
        for s in samples:
            w.add(s)
        w.add_failure(input_uri="file:///v/broken.mp4", stage="probe", reason="not_a_video", detail="no streams")
    return samples


@pytest.fixture
def dataset(tmp_path):
    """A valid dataset of every task, several shards per task; returns (dir, samples)."""
    samples = write_every_task(str(tmp_path / "ds"))
    return tmp_path / "ds", samples
