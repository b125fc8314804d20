"""End to end on the shipped real clips with tiny models: run -> validate -> every input
accounted for -> every task present; CLI errors; the same run resumed after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datagen.cli import app
from datagen.io.storage import Location
from datagen.io.tables import read_failures, read_manifest
from datagen.io.validate import validate
from schemas.tasks import TASKS
from stages.assemble import NAMED_OBJECT_TASKS
from tests.pipeline.conftest import REAL_VIDEOS, copy_videos

pytestmark = pytest.mark.slow


def keys_of(path) -> list[str]:
    return sorted(read_manifest(Location.parse(str(path))).column("key").to_pylist())


def test_reference_run_is_valid_complete_and_smoke(reference_run):
    out, summary = reference_run
    report = validate(str(out))
    assert report.ok, report.problems
    # every enabled task present, but those naming an object: the tiny VLM names none, so
    # SAM2's grid masks are unnamed (the named path: tests/pipeline/test_segment_e2e.py)
    assert set(summary.stats["tasks"]) == {t.name for t in TASKS} - set(NAMED_OBJECT_TASKS)
    assert summary.stats["smoke"] is True
    stats = json.loads((out / "stats.json").read_text())
    assert stats["samples"] == report.samples == len(keys_of(out))
    videos = set(read_manifest(Location.parse(str(out))).column("video_uri").to_pylist())
    assert videos == set(REAL_VIDEOS)  # every real clip gave samples


def test_bad_inputs_are_accounted_for_and_good_ones_still_produce(tmp_path, write_config):
    videos = copy_videos(tmp_path / "in", names={"box.mp4"})
    (tmp_path / "in" / "empty.mp4").write_bytes(b"")
    (tmp_path / "in" / "notes.mp4").write_text("not a video at all\n" * 100)
    (tmp_path / "in" / "box copy.mp4").write_bytes(Path(videos[0]).read_bytes())  # same content, other name
    out = tmp_path / "ds"
    res = subprocess.run([sys.executable, "-m", "datagen", "run", "--config", str(write_config()),
                          "--input", str(tmp_path / "in"), "--output", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert validate(str(out)).ok
    fails = {Path(r["input_uri"]).name: r["reason"] for r in read_failures(Location.parse(str(out))).to_pylist()}
    assert fails["empty.mp4"] == "empty_file" and fails["notes.mp4"] == "not_a_video"
    with_samples = {Path(u).name for u in read_manifest(Location.parse(str(out))).column("video_uri").to_pylist()}
    # exactly one of the two identical files owns the samples, the other is a duplicate failure row
    assert len(with_samples & {"box.mp4", "box copy.mp4"}) == 1
    assert fails.get("box.mp4", fails.get("box copy.mp4")) == "duplicate_video"
    assert set(fails) | with_samples == {"box.mp4", "box copy.mp4", "empty.mp4", "notes.mp4"}
    assert "dataset:" in res.stdout


def test_user_errors_are_one_line(tmp_path, write_config):
    runner = CliRunner()
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("pairs:\n  max_pairs_per_shoot: 3\n")
    res = runner.invoke(app, ["run", "--config", str(bad_key), "--input", REAL_VIDEOS[0], "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "pairs.max_pairs_per_shoot" in res.output and "allowed keys" in res.output
    res = runner.invoke(app, ["run", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "nope" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["run", "--config", str(write_config()), "--set", "assemble.tasks.edit=1",
                              "--input", REAL_VIDEOS[0], "--output", str(tmp_path / "o3")])
    assert res.exit_code == 2 and "unknown task 'edit'" in res.output


def _wait_for(predicate, proc, timeout_s=300.0):
    """Poll for a condition the run reaches (not a fixed sleep): a file appearing."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError("the run never reached the kill point")


@pytest.mark.parametrize("kill_point", ["before_first_commit", "after_first_commit"])
def test_resume_after_sigkill_of_the_driver(tmp_path, tiny_models, write_config, reference_run, kill_point):
    ref_out, _ = reference_run
    out = tmp_path / "ds"
    cfg = write_config(write={"min_rows_per_write": 20})
    cmd = [sys.executable, "-m", "datagen", "run", "--config", str(cfg), "--output", str(out)]
    for v in REAL_VIDEOS:
        cmd += ["--input", v]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        if kill_point == "before_first_commit":
            reached = _wait_for(lambda: (out / "run.json").exists(), proc)
        else:
            reached = _wait_for(lambda: any((out / "manifest").glob("*.parquet")), proc)
        assert reached, "the run finished before the kill point"
        os.kill(proc.pid, signal.SIGKILL)  # the driver dies without any cleanup
        proc.wait(30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its local Ray processes go down with it
        except ProcessLookupError:
            pass
    committed_before = keys_of(out) if (out / "manifest").exists() else []
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming" in res.stderr + res.stdout
    keys = keys_of(out)
    assert len(keys) == len(set(keys))  # nothing written twice
    assert keys == keys_of(ref_out)  # nothing lost: the same keys as an uninterrupted run
    assert set(committed_before) <= set(keys)
    report = validate(str(out))
    assert report.ok, report.problems


def helpers_alive(names: set[str]) -> list[str]:
    import ray

    # no public API lists actors without the dashboard, which these runs do not start
    return [a["ActorClassName"] for a in ray._private.state.actors().values()
            if a["State"] != "DEAD" and a["ActorClassName"] in names]


def test_a_run_in_a_long_lived_driver_leaves_no_helper_actor_behind(tmp_path, tiny_models):
    """A notebook or a bench runs again in the same driver: each run's helper actors (resume
    state, write claims, video registry, cost ledger) must end with it, not pile up."""
    from datagen.config import from_dict
    from datagen.pipeline.config import PipelineConfig
    from datagen.pipeline.run import run_pipeline
    from tests.pipeline.conftest import _shutdown_ray, tiny_config_dict

    cfg = from_dict(PipelineConfig, tiny_config_dict(tiny_models))
    helpers = {"CostLedger", "VideoRegistry", "ResumeIndex", "WriteClaims"}
    try:
        for run in ("a", "b"):
            run_pipeline(cfg, [p for p in REAL_VIDEOS if p.endswith("box.mp4")], str(tmp_path / run))
            # ray.kill returns before the GCS records the death: wait on that record, bounded
            deadline = time.monotonic() + 30
            while (alive := helpers_alive(helpers)) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert alive == [], f"after run {run}: {alive}"
    finally:
        _shutdown_ray()
