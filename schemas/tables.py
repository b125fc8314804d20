"""Arrow schemas of the manifest and failures tables (Parquet datasets beside the shards)."""
from __future__ import annotations

import pyarrow as pa

MEMBER = pa.struct([("name", pa.string()), ("size_bytes", pa.int64())])
LABEL = pa.struct([
    ("stage", pa.string()),
    ("model_id", pa.string()),
    ("revision", pa.string()),
    ("params_json", pa.string()),
])

MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("task_id", pa.int16()),
    ("task", pa.string()),
    ("shard", pa.string()),  # path relative to the dataset root, e.g. shards/instruction_edit/000003.tar
    ("members", pa.list_(MEMBER)),
    ("sample_bytes", pa.int64()),
    ("video_uri", pa.string()),
    ("video_id", pa.string()),
    ("shot", pa.int32()),
    ("pair", pa.int32()),
    ("frame_a", pa.int64()),
    ("frame_b", pa.int64()),
    ("t_a_s", pa.float64()),
    ("t_b_s", pa.float64()),
    ("labels", pa.list_(LABEL)),
    ("changed_labels", pa.list_(pa.string())),  # stages whose labels a relabel replaced
    ("previous_labels", pa.list_(LABEL)),  # their provenance before the relabel
    ("dataset_version", pa.int32()),
    ("verify_score", pa.int16()),  # the judge's 1-5 score of the pair; null when verify did not run (and in older datasets)
])

FAILURES_SCHEMA = pa.schema([
    ("input_uri", pa.string()),  # the video (or dataset sample) the failure belongs to
    ("video_id", pa.string()),
    ("key", pa.string()),  # pair or sample key when the failure is below video level
    ("stage", pa.string()),
    ("reason", pa.string()),  # short, groupable code, e.g. "not_a_video", "invalid_json"
    ("detail", pa.string()),  # human-readable message
])

FAILURE_FIELDS = tuple(FAILURES_SCHEMA.names)

# The run's progress record, beside the manifest: one row per pair (or per failed video)
# whose outputs are all committed, or that failed for a permanent reason. Resume skips
# what is listed here; a transient failure is never listed (the next run retries it).
PROGRESS_SCHEMA = pa.schema([
    ("pair_key", pa.string()),  # {video_id}_s{shot}_p{pair}; None for a video that failed before pairs
    ("video_id", pa.string()),
    ("video_uri", pa.string()),
    ("pairs_in_video", pa.int32()),  # how many pairs the video yielded (0 when it failed)
    ("status", pa.string()),  # "done" or "failed"
    ("reason", pa.string()),  # the permanent failure reason when failed (schemas/reasons.py), else None
    ("made", pa.list_(pa.string())),  # task names sampled from the pair
    ("skipped_json", pa.string()),  # {task: reason} for tasks that did not apply
])

# The pair store's index (datagen/io/pair_store.py): one row per pair record, beside its tar.
PAIR_INDEX_SCHEMA = pa.schema([
    ("pair_key", pa.string()),
    ("video_id", pa.string()),
    ("video_uri", pa.string()),
    ("shard", pa.string()),  # the pair-store tar, relative to the dataset root, e.g. pairs/000-00003-000000.tar
    ("pair_bytes", pa.int64()),
    ("tar_offset", pa.int64()),  # where the pair's members start in its tar: a re-label reads byte ranges
    ("tar_bytes", pa.int64()),  # how many bytes of the tar they span (headers and padding included)
    ("members", pa.list_(MEMBER)),
    ("labels", pa.list_(LABEL)),  # provenance of every label the record holds
    ("samples", pa.list_(pa.string())),  # keys of the pair's samples in this version
    ("added", pa.list_(pa.string())),  # a re-label: keys new in this version
    ("removed", pa.list_(pa.string())),  # a re-label: keys of the version it came from that are gone
    ("changed", pa.list_(pa.string())),  # a re-label: keys whose labels were re-run
    ("dataset_version", pa.int32()),
])

# Pairs the verify stage's judge rejected (score below verify.min_score), with what a later
# judge or a preference model needs to reuse them without decoding the video again.
NEGATIVES_SCHEMA = pa.schema([
    ("pair_key", pa.string()),
    *(MANIFEST_SCHEMA.field(n) for n in ("video_uri", "video_id", "shot", "pair", "frame_a", "frame_b", "t_a_s", "t_b_s")),
    ("instruction", pa.string()),
    ("caption_json", pa.string()),  # the captioner's whole answer
    ("score", pa.int16()),  # the judge's 1-5 score
    ("verdict_json", pa.string()),  # score, plausible, failing_parts
    ("judge_json", pa.string()),  # the judge's provenance (model, revision, prompt version, min_score)
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("image_a", pa.binary()),  # the frames as the pipeline encoded them
    ("image_b", pa.binary()),
])
