"""Every failure reason a stage may record, and its kind: the one table of them.

A `permanent` reason says the input is bad (the file, the pair, the model's answer after
its retries): it is recorded once and the pair counts as done (`datagen run --retry-failed
REASON` re-opens it). A `transient` reason says the world failed (a service, a GPU,
storage): the pair is retried inside the run, and left undone for the next run when it
still fails (datagen/pipeline/sink.py writes no progress row for it). `tests/schemas/test_reasons.py`
fails when a stage emits a reason that is not declared here.
"""
from __future__ import annotations

from typing import Literal

Kind = Literal["permanent", "transient"]
PERMANENT: Kind = "permanent"
TRANSIENT: Kind = "transient"

REASONS: dict[str, Kind] = {
    # ingest: the file itself
    "not_found": PERMANENT,
    "empty_file": PERMANENT,
    "not_a_video": PERMANENT,
    "truncated": PERMANENT,
    "corrupt": PERMANENT,  # a container whose header or index is damaged (not cut short)
    "audio_only": PERMANENT,
    "unsupported_codec": PERMANENT,
    "absurd_dimensions": PERMANENT,
    "too_small": PERMANENT,  # a side under ingest.limits.min_side_px
    "too_short": PERMANENT,  # fewer frames than a pair needs
    "decode_error": PERMANENT,
    "probe_error": PERMANENT,
    "duplicate_video": PERMANENT,
    # shots / pairs
    "shots_error": PERMANENT,
    "no_pairs": PERMANENT,
    "pairs_error": PERMANENT,
    # text / safety filters on a pair's frames
    "text_heavy": PERMANENT,
    "text_changes": PERMANENT,
    "unsafe": PERMANENT,
    # caption: the model's answer, after its retries
    "bad_image": PERMANENT,
    "refusal": PERMANENT,
    "invalid_json": PERMANENT,
    "missing_fields": PERMANENT,
    "box_out_of_range": PERMANENT,
    "bad_field": PERMANENT,
    # verify: the judge's score is below verify.min_score (the pair is kept as a negative)
    "instruction_mismatch": PERMANENT,
    # segment / depth
    "bad_caption": PERMANENT,
    "bad_output": PERMANENT,
    # assemble: one task sample of a pair could not be built from its labels
    "assemble_error": PERMANENT,
    # the world failed
    "backend_error": TRANSIENT,  # a caption service answered 5xx, timed out or dropped the connection
    "model_error": TRANSIENT,
    "out_of_memory": TRANSIENT,  # CUDA or host OOM on a single row, after splitting its batch
    "storage_error": TRANSIENT,  # the object store or disk failed to serve an input
}


def is_transient(reason: str) -> bool:
    return kind_of(reason) == TRANSIENT


def kind_of(reason: str) -> Kind:
    """The kind of a declared reason; an undeclared one is a bug in the stage that emitted it."""
    try:
        return REASONS[reason]
    except KeyError:
        raise KeyError(f"failure reason {reason!r} is not declared in schemas/reasons.py") from None
