"""Why a run stopped, in one line a user can act on, found under Ray's exception wrappers.

A full or unreachable output store (the sink's StorageFailed), a model stage whose actors
did not start within `ray.actor_start_timeout_s`, or whose actor died more often than
`ray.max_actor_restarts`: each names the thing and what to do. Anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import re

from datagen import UserError
from datagen.io.faults import StorageFailed
from datagen.pipeline.config import PipelineConfig


def _causes(e: BaseException | None):
    """`e` and what it wraps: Ray's `cause`, then `__cause__` / `__context__`."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__


def _stage_of(e: BaseException, names: dict[str, str]) -> str | None:
    """The model stage whose actor pool `e` comes from: Ray names it `MapBatches(<class>)`, in
    its messages and in the operator that raised."""
    texts = [str(e)]
    tb = e.__traceback__
    while tb is not None:
        name = getattr(tb.tb_frame.f_locals.get("self"), "name", None)  # the operator that raised
        texts.append(name if isinstance(name, str) else "")
        tb = tb.tb_next
    for text in texts:
        for cls in re.findall(r"MapBatches\((\w+)\)", text):
            if cls in names:
                return names[cls]
    return None


def why_run_stopped(e: BaseException, cfg: PipelineConfig, stage_classes: dict[str, str]) -> UserError | None:
    """One line for the failures a user can act on: a full or unreachable store, a model
    stage whose actors never start or keep dying. None: a bug, keep the traceback.
    `stage_classes`: model stage class name -> stage name."""
    import ray

    for cause in _causes(e):
        if type(cause) is StorageFailed:  # not Ray's RayTaskError subclass of it, whose text is a traceback
            return cause
        stage = _stage_of(cause, stage_classes)
        if isinstance(cause, ray.exceptions.GetTimeoutError) and "starting actors" in str(cause):
            return UserError(f"stage {stage or '/'.join(cfg.labels)}: its actors did not start within "
                             f"{cfg.ray.actor_start_timeout_s:g} s (ray.actor_start_timeout_s); check that its model "
                             f"loads (the Ray worker logs say why) and that the cluster has the resources it asks for")
        if stage and isinstance(cause, ray.exceptions.RayActorError):
            return UserError(f"stage {stage}: an actor died after {cfg.ray.max_actor_restarts} restart(s) "
                             f"(ray.max_actor_restarts): {str(cause).splitlines()[0][:300]} Committed pairs are kept: "
                             f"run the same command again once the cause is fixed (the Ray worker logs say why)")
    return None
