"""What a job's CPU workers import: never torch or transformers.

A Ray worker imports the module of each function or actor class it runs. The model
stages import torch and transformers (~3.6 s of CPU a process); the task workers and
helper actors of a job are many per node, so each of those imports would be paid many
times at every job's start, on the CPUs that feed the GPUs.
"""
from __future__ import annotations

import subprocess
import sys

# the modules behind every Ray task and helper actor of `datagen run` and `datagen relabel`
CPU_WORKER_MODULES = [
    "datagen.pipeline.cpu_tasks",      # the CPU stages as tasks, VideoRegistry
    "datagen.pipeline.commit",         # WriteClaims
    "datagen.pipeline.progress",       # ResumeIndex
    "datagen.pipeline.costs",          # CostLedger
    "datagen.pipeline.sink",           # the write tasks
    "datagen.pipeline.relabel_steps",  # load_pairs
    "stages.ingest", "stages.shots", "stages.pairs", "stages.assemble",
]
HEAVY = ["torch", "transformers", "webdataset"]


def test_cpu_workers_import_no_model_library():
    code = (f"import sys\nfor m in {CPU_WORKER_MODULES!r}: __import__(m)\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"a CPU worker module imports {out}"

