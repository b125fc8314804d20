"""The dataset card: `DIR/README.md` with Hugging Face dataset-card YAML front matter.

One `configs` entry per task directory points at its shards, so
`datasets.load_dataset(DIR, "instruction_edit")` works with no `data_files`. The body
states what a user must know before training: the smoke mark, the schema version, the
models and revisions that made the labels, and the counts.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from datagen.io.shards import SHARDS_DIR
from datagen.io.storage import Location
from datagen.io.tables import read_manifest
from schemas.sample import SCHEMA_VERSION
from schemas.tasks import TASKS, TaskSpec

CARD_FILE = "README.md"


def card_configs(task_counts: dict[str, int]) -> list[dict[str, Any]]:
    """The `configs` front matter: one per task with samples, in task-id order."""
    return [{"config_name": t.name, "data_files": [{"split": "train", "path": f"{SHARDS_DIR}/{t.name}/*.tar"}]}
            for t in TASKS if task_counts.get(t.name)]


def label_models(manifest: pa.Table) -> list[tuple[str, str, str, int]]:
    """(stage, model id, revision, samples) of every label in the manifest, most used first."""
    labels = pc.list_flatten(manifest.column("labels"))
    if len(labels) == 0:
        return []
    rows = zip(*(pc.struct_field(labels, f).to_pylist() for f in ("stage", "model_id", "revision")))
    return [(s, m, r, n) for (s, m, r), n in sorted(Counter(rows).items(), key=lambda kv: (kv[0][0], -kv[1]))]


def _inputs(t: TaskSpec) -> str:
    return ", ".join(f"{s.role.value} ({s.kind.value}){' xN' if t.repeat_assets else ''}" for s in t.inputs) or "-"


def render_card(stats: dict[str, Any], models: list[tuple[str, str, str, int]], dataset_version: int) -> str:
    tasks = stats.get("tasks", {})
    front = {"configs": card_configs(tasks), "tags": ["datagen", "webdataset"] + (["smoke"] if stats.get("smoke") else []),
             "datagen": {"schema_version": SCHEMA_VERSION, "dataset_version": dataset_version,
                         "smoke": bool(stats.get("smoke")), "samples": stats.get("samples", 0),
                         "failures": stats.get("failures", 0)}}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", "# datagen dataset", ""]
    if stats.get("smoke"):
        lines += ["> **SMOKE DATASET**: the labels come from tiny random models, not real ones. "
                  "Use it to test a pipeline or a trainer, never to train a model you keep.", ""]
    lines += [f"Sample schema version {SCHEMA_VERSION}, dataset version {dataset_version}: "
              f"{stats.get('samples', 0)} samples from {stats.get('videos_with_samples', 0)} videos, "
              f"{stats.get('failures', 0)} failure rows (failures/*.parquet).", "",
              "## Tasks", "", "| id | config | inputs (role) | target | samples |", "|---|---|---|---|---|"]
    lines += [f"| {t.id} | {t.name} | {_inputs(t)} | {t.target.value} | {tasks.get(t.name, 0)} |" for t in TASKS]
    lines += ["", "## Labels", "", "| stage | model | revision | samples |", "|---|---|---|---|"]
    lines += [f"| {s} | {m} | {r} | {n} |" for s, m, r, n in models] or ["| - | - | - | - |"]
    drops = [(stage, reason, n) for stage, st in stats.get("stages", {}).items()
             for reason, n in sorted(st.get("dropped", {}).items())]
    if drops:
        lines += ["", "## Dropped inputs", "", "| stage | reason | rows |", "|---|---|---|"]
        lines += [f"| {s} | {r} | {n} |" for s, r, n in drops]
    first = next((c["config_name"] for c in card_configs(tasks)), "instruction_edit")
    lines += ["", "## Load", "", "```python", "from datasets import load_dataset",
              f'ds = load_dataset("path/to/this/dir", "{first}", split="train")', "```", "",
              "Each sample is one WebDataset key: `json` (prompts, provenance, facts), `in0.*` ... (inputs in "
              "role order) and `target.*`. `manifest/*.parquet` has one row per sample.", ""]
    return "\n".join(lines)


def write_card(loc: Location, stats: dict[str, Any]) -> None:
    """Write (or replace) the card of the dataset at `loc` from its stats and manifest."""
    manifest = read_manifest(loc).select(["labels", "dataset_version"])
    version = pc.max(manifest.column("dataset_version")).as_py() if manifest.num_rows else 1
    loc.write_bytes(CARD_FILE, render_card(stats, label_models(manifest), version).encode())
