"""Hostile video names must give safe keys and member names."""
import re

import pytest

from datagen.io.shards import DatasetWriter
from datagen.io.synthetic import make_sample
from datagen.io.validate import validate
from schemas.members import safe_id, sample_key

SAFE = re.compile(r"^[A-Za-z0-9_-]+$")
HOSTILE = [
    "../../x.mp4",
    "/etc/passwd",
    "my holiday video (1).mp4",
    "日本語のビデオ.mkv",
    "$(rm -rf ~); `echo pwned` | & > <.avi",
    "a" * 300 + ".mp4",
    "clip.final.v2.mp4",
    "-rf",
    "",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_give_safe_keys(name):
    key = sample_key(name, 1, 2, 3)
    assert SAFE.match(key), key
    assert "." not in key and "/" not in key and ".." not in key
    assert len(key) <= 100


def test_safe_ids_are_stable_and_do_not_collide():
    assert safe_id("abc123") == "abc123"
    assert safe_id("a b") == safe_id("a b")
    assert safe_id("a b") != safe_id("a_b") != safe_id("a-b")
    assert len({safe_id(n) for n in HOSTILE}) == len(HOSTILE)


def test_hostile_names_write_valid_dataset(tmp_path):
    with DatasetWriter(str(tmp_path)) as w:
        for i, name in enumerate(HOSTILE):
            w.add(make_sample(1, video_id=name, pair=i, video_uri=f"file:///v/{name}"))
    names = [p.name for p in (tmp_path / "shards").rglob("*")]
    assert all(".." not in n for n in names)
    report = validate(str(tmp_path))
    assert report.ok, report.problems
    assert report.samples == len(HOSTILE)
    # nothing escaped the dataset directory
    assert {p.name for p in tmp_path.iterdir()} == {"shards", "manifest"}
