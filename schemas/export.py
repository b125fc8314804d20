"""Write schemas/sample.schema.json from the code: `python -m schemas.export`."""
import json

from schemas.jsonschema import SCHEMA_FILE, build_schema

if __name__ == "__main__":
    SCHEMA_FILE.write_text(json.dumps(build_schema(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {SCHEMA_FILE}")
