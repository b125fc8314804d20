"""Datasets written before the verify stage (no verify_score column, no "verify" in the JSON) still read."""
import json

import pyarrow as pa
import pyarrow.parquet as pq

from datagen.io.storage import Location
from datagen.io.synthetic import make_sample
from datagen.io.tables import read_manifest
from schemas.sample import SampleRecord
from schemas.tables import MANIFEST_SCHEMA


def test_a_manifest_without_verify_score_reads_as_null(tmp_path):
    old = pa.schema([f for f in MANIFEST_SCHEMA if f.name != "verify_score"])
    (tmp_path / "manifest").mkdir()
    pq.write_table(pa.Table.from_pylist([{"key": "k0", "task": "instruction_edit"}], schema=old),
                   tmp_path / "manifest" / "old.parquet")
    rows = read_manifest(Location.parse(str(tmp_path))).to_pylist()
    assert [(r["key"], r["verify_score"]) for r in rows] == [("k0", None)]


def test_a_sample_json_without_verify_round_trips_and_a_verdict_survives():
    record = make_sample(1).record
    doc = json.loads(record.to_json())
    assert "verify" not in doc and SampleRecord.from_json(doc).verify == {}
    record.verify = {"score": 4, "plausible": True, "failing_parts": []}
    assert SampleRecord.from_json(record.to_json()).verify == record.verify
