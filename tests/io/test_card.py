"""The dataset card: Hugging Face `datasets` loads every task directory by name, with no data_files."""
import pytest
import yaml

from datagen.io.card import CARD_FILE, write_card
from datagen.io.shards import DatasetWriter
from datagen.io.storage import Location
from datagen.io.synthetic import make_sample
from datagen.io.tables import compute_stats
from schemas.sample import SCHEMA_VERSION, Provenance
from schemas.tasks import TASKS
from tests.io.conftest import PER_TASK, write_every_task


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture
def carded(tmp_path):
    root = tmp_path / "ds"
    write_every_task(str(root))
    loc = Location.parse(str(root))
    write_card(loc, compute_stats(loc, None, {"smoke": True}))
    return root


def test_load_dataset_by_task_name_works_for_every_task_directory(carded, tmp_path):
    datasets = pytest.importorskip("datasets")
    for spec in TASKS:
        ds = datasets.load_dataset(str(carded), spec.name, split="train", cache_dir=str(tmp_path / "hf"))
        assert len(ds) == PER_TASK, spec.name
        assert {row["json"]["task"] for row in ds} == {spec.name}
        assert any(c.startswith("target.") for c in ds.column_names)


def test_card_states_schema_smoke_models_and_counts(carded):
    card = (carded / CARD_FILE).read_text()
    meta = front_matter(card)
    assert [c["config_name"] for c in meta["configs"]] == [t.name for t in TASKS]
    assert meta["configs"][1]["data_files"] == [{"split": "train", "path": "shards/instruction_edit/*.tar"}]
    assert meta["datagen"] == {"schema_version": SCHEMA_VERSION, "dataset_version": 1, "smoke": True,
                               "samples": len(TASKS) * PER_TASK, "failures": 1}
    assert "SMOKE DATASET" in card and "smoke" in meta["tags"]
    assert f"| synthetic | datagen-synthetic | 0 | {len(TASKS) * PER_TASK} |" in card
    assert f"| 1 | instruction_edit | canvas (rgb) | rgb | {PER_TASK} |" in card
    assert "| probe | not_a_video | 1 |" in card


def test_card_lists_each_model_revision_and_only_tasks_with_samples(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(str(root), dataset_version=3) as w:
        for pair in range(3):
            s = make_sample(6, pair=pair)
            s.record.labels = {"depth": Provenance("depth-anything/small", "r2" if pair else "r1", {})}
            w.add(s)
    loc = Location.parse(str(root))
    write_card(loc, compute_stats(loc))
    card = (root / CARD_FILE).read_text()
    meta = front_matter(card)
    assert [c["config_name"] for c in meta["configs"]] == ["depth_estimation"]
    assert meta["datagen"]["dataset_version"] == 3 and meta["datagen"]["smoke"] is False
    assert "| depth | depth-anything/small | r2 | 2 |" in card and "| depth | depth-anything/small | r1 | 1 |" in card
    assert "SMOKE" not in card
