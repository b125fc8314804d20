"""Provenance once per run and the driver's pre-flight: a model that cannot be loaded is one
line before anything starts; actors record the pinned revision without reading weights."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from datagen import UserError
from datagen.models.loading import preflight_model
from datagen.models.provenance import weights_fingerprint
from datagen.models.tiny_vision import build_tiny_depth_anything
from datagen.pipeline.config import load_config
from datagen.pipeline.preflight import preflight_models
from schemas.columns import provenance_column
from stages.depth import DepthStage
from tests.stages.vision_inputs import batch, pair_row

REPO = pathlib.Path(__file__).resolve().parents[2]


def hub_snapshot(repo_dir: pathlib.Path, commit: str, files_from: pathlib.Path) -> pathlib.Path:
    """The Hugging Face cache layout: refs/main -> commit, snapshots/<commit>/<file> -> blob links."""
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in files_from.iterdir():
        (snap / f.name).symlink_to(f)
    return snap


@pytest.fixture(scope="module")
def depth_dir(tmp_path_factory):
    return build_tiny_depth_anything(tmp_path_factory.mktemp("preflight") / "depth")


@pytest.fixture
def weight_reads(monkeypatch):
    """Paths of weight files opened from Python (the fingerprint reads them this way)."""
    opened: list[str] = []
    real_open = pathlib.Path.open

    def spy(self, *args, **kwargs):
        if self.suffix == ".safetensors":
            opened.append(str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "open", spy)
    return opened


def test_actor_starts_after_preflight_read_no_weight_file_for_provenance(depth_dir, weight_reads):
    cfg = load_config("cpu", [f"depth.model={depth_dir}", "labels=[depth]", "assemble.tasks={}"])
    pinned = preflight_models(cfg)
    assert len(weight_reads) == 1  # the driver hashed the weights, once
    assert pinned.depth.revision == "sha256:" + weights_fingerprint(depth_dir)
    assert cfg.depth.revision == ""  # the user's config (the run's fingerprint) is untouched
    weight_reads.clear()
    first, second = DepthStage(pinned.depth), DepthStage(pinned.depth)  # two actor starts of the run
    assert weight_reads == []
    for stage in (first, second):
        prov = json.loads(stage(batch([pair_row()]))[provenance_column("depth")][0])
        assert prov["revision"] == pinned.depth.revision
    DepthStage(cfg.depth)  # without the pre-flight each start hashes the weights (what this test guards)
    assert len(weight_reads) == 1


def test_a_hub_snapshot_directory_is_named_by_its_commit_without_hashing(depth_dir, tmp_path, weight_reads):
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = hub_snapshot(tmp_path / "models--org--depth", commit, depth_dir)
    assert preflight_model(str(snap), "", "depth.model") == commit
    assert weight_reads == []


def test_a_hub_id_from_a_filled_cache_is_pinned_to_its_commit(depth_dir, tmp_path, monkeypatch):
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    hub_snapshot(tmp_path / "hub" / "models--org--depth", commit, depth_dir)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert preflight_model("org/depth", "", "depth.model") == commit


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing", "does not exist"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no readable config.json"),
    (lambda d: ((d / "noweights").mkdir(), (d / "noweights" / "config.json").write_text("{}"))[0] or d / "noweights",
     "no weight files"),
])
def test_unloadable_local_model_is_one_user_error_naming_the_key(tmp_path, make, message):
    with pytest.raises(UserError, match=f"config segment.model: .*{message}"):
        preflight_model(str(make(tmp_path)), "", "segment.model")


@pytest.mark.slow
def test_datagen_run_cpu_profile_offline_exits_2_with_one_line_before_ray(tmp_path):
    """The issue's new user: `datagen run --config cpu` with no network and an empty HF cache."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    video = next(p for p in (REPO / "datagen/assets/videos").iterdir() if p.suffix == ".mp4")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "datagen", "run", "--config", "cpu", "-i", str(video), "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: config caption.model: cannot load 'Qwen/Qwen2-VL-2B-Instruct'")
    assert "Traceback" not in proc.stderr and not out.exists()  # nothing written, no Ray started
