"""Checkpoint save and load run without the garbage collector (datagen/train/checkpoint.py, no_collection)."""
from __future__ import annotations

import gc

import torch

from datagen.train import checkpoint


def test_save_and_restore_hold_off_the_collector_and_restore_it(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model, ema = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    model(torch.randn(2, 8)).sum().backward()
    optimizer.step()
    collections, inside = [], []

    def count(phase, info):
        if phase == "start":
            collections.append(bool(inside))

    def watched(fn):  # DCP's own call: the part that makes its ~10^5 objects
        def call(*args, **kwargs):
            inside.append(fn)
            try:
                return fn(*args, **kwargs)
            finally:
                inside.pop()
        return call

    monkeypatch.setattr(checkpoint.dcp, "save", watched(checkpoint.dcp.save))
    monkeypatch.setattr(checkpoint.dcp, "load", watched(checkpoint.dcp.load))

    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)  # a collection at nearly every allocation: DCP's calls would set off hundreds
    gc.callbacks.append(count)
    try:
        path = checkpoint.save(tmp_path, 1, model, ema, optimizer, scheduler, {}, keep=1, is_main=True)
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        checkpoint.restore(path, model, ema, optimizer, scheduler)
        enabled_after = gc.isenabled()
    finally:
        gc.callbacks.remove(count)
        gc.set_threshold(*old)
    assert sum(collections) == 0, f"{sum(collections)} collections inside DCP's save and load"
    assert enabled_after  # collections run again once the call is over
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_a_collector_that_was_off_stays_off(tmp_path):
    gc.disable()
    try:
        with checkpoint.no_collection():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_trainer_freezes_what_it_built_before_the_first_step():
    from datagen.train.train import freeze_setup

    built = torch.nn.Linear(4, 4)
    try:
        freeze_setup()
        frozen = gc.get_freeze_count()
        in_generations = any(o is built for g in range(3) for o in gc.get_objects(g))
        assert frozen > 0 and gc.is_tracked(built) and not in_generations  # moved to the permanent generation
        gc.collect()  # a full collection leaves the frozen objects where they are
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
