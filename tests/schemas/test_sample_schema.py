import json

import jsonschema
import pytest

from datagen.io.synthetic import make_sample
from schemas.jsonschema import SCHEMA_FILE, build_schema
from schemas.sample import SCHEMA_VERSION, SampleRecord
from schemas.tasks import TASKS


def test_checked_in_json_schema_matches_code():
    """Regenerate with `python -m schemas.export` (and bump SCHEMA_VERSION) when this fails."""
    assert json.loads(SCHEMA_FILE.read_text()) == build_schema()


@pytest.mark.parametrize("task_id", [t.id for t in TASKS])
def test_records_of_every_task_validate_and_round_trip(task_id):
    rec = make_sample(task_id, pair=3).record
    doc = json.loads(rec.to_json())
    jsonschema.validate(doc, build_schema())
    assert doc["schema_version"] == SCHEMA_VERSION
    assert SampleRecord.from_json(rec.to_json()) == rec


def test_schema_rejects_unknown_task_and_extra_fields():
    doc = json.loads(make_sample(1).record.to_json())
    schema = build_schema()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "task_id": 99}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "surprise": 1}, schema)
    bad = json.loads(json.dumps(doc))
    bad["prompt"]["images"][0]["role"] = "wizard"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
