"""Before any actor starts: every model stage's weights can be found, and its revision is pinned.

Run on the driver once per run. A missing model fails here in one line (not as one
traceback per actor after Ray started them all), and the revision each actor records
is computed once here, not by hashing the weights on every actor start.
"""
from __future__ import annotations

import dataclasses

from datagen.models.loading import preflight_model


def preflight_models(cfg):
    """A copy of `cfg` (a PipelineConfig) whose model stages' `revision` is pinned; the
    caller's config, which names the run (its fingerprint), is left as the user wrote it."""
    pinned = dataclasses.replace(cfg)
    for stage in cfg.labels:
        section = cfg.section(stage)  # the judge's empty fields come from the captioner
        if not hasattr(section, "revision") or getattr(section, "backend", "") == "vllm-server":
            continue  # edges has no weights; a served model is the server's to load
        if getattr(section, "engine_args", {}).get("load_format") == "dummy":
            continue  # vLLM fills random weights (benchmarks): there are no weight files to find
        revision = preflight_model(section.model, section.revision, f"{stage}.model")
        setattr(pinned, stage, dataclasses.replace(section, revision=revision))
    return pinned
