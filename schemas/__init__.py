"""The sample contract: tasks, prompts, keys, the sample record and the table schemas."""
from schemas.members import input_member, safe_id, sample_key, target_member
from schemas.sample import SCHEMA_VERSION, ImageRef, Prompt, Provenance, Sample, SampleRecord, Source
from schemas.tables import FAILURES_SCHEMA, MANIFEST_SCHEMA
from schemas.tasks import TASK_BY_ID, TASK_BY_NAME, TASKS, ImageKind, Role, Slot, TaskSpec, input_slots, task

__all__ = [
    "FAILURES_SCHEMA", "MANIFEST_SCHEMA", "SCHEMA_VERSION", "TASKS", "TASK_BY_ID", "TASK_BY_NAME",
    "ImageKind", "ImageRef", "Prompt", "Provenance", "Role", "Sample", "SampleRecord", "Slot", "Source",
    "TaskSpec", "input_member", "input_slots", "safe_id", "sample_key", "target_member", "task",
]
