"""Before any actor starts: every model stage's weights can be found, and its revision is pinned.

Run on the driver once per run. A missing model fails here in one line (not as one
traceback per actor after Ray started them all), and the revision each actor records
is computed once here, not by hashing the weights on every actor start.
"""
from __future__ import annotations

import dataclasses
import threading

from datagen import UserError
from datagen.models.loading import preflight_model


def _bounded(stage: str, timeout_s: float, fn, *args):
    """`fn(*args)` on a daemon thread, so that a model directory on a stuck mount (or a FIFO)
    ends the run naming its stage instead of blocking the driver forever; the stuck thread
    is left behind and does not keep the process alive."""
    box: dict = {}

    def call():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 -- handed to the caller's thread below
            box["error"] = e

    worker = threading.Thread(target=call, name=f"preflight-{stage}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise UserError(f"stage {stage}: its model did not load within {timeout_s:g} s (ray.actor_start_timeout_s); "
                        f"check that {stage}.model is readable")
    if "error" in box:
        raise box["error"]
    return box["value"]


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
        revision = _bounded(stage, cfg.ray.actor_start_timeout_s, preflight_model, section.model, section.revision,
                            f"{stage}.model")
        setattr(pinned, stage, dataclasses.replace(section, revision=revision))
    return pinned
