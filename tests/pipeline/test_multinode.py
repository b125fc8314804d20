"""A real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`),
the run submitted to it, the worker node killed mid-run: the run completes, full key set."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from datagen.io.storage import Location
from datagen.io.tables import read_manifest
from datagen.io.validate import validate
from tests.conftest import free_port
from tests.pipeline.conftest import REAL_VIDEOS

pytestmark = pytest.mark.slow
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def _ray(*args, env):
    res = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


def _procs_with(text: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in (p.info["cmdline"] or [])):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


@pytest.fixture
def two_node_cluster():
    # Unix socket paths must stay short: a temp dir right under /tmp.
    temp_dir = tempfile.mkdtemp(prefix="dgray", dir="/tmp")
    port, worker_port = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}  # see FACTS.md: token auth is on by default
    common = ["--num-cpus=2", "--memory=4000000000", "--object-store-memory=400000000", "--disable-usage-stats"]
    _ray("start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
         f"--temp-dir={temp_dir}", *common, env=env)
    _ray("start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", f"--node-manager-port={worker_port}",
         *common, env=env)
    try:
        yield f"127.0.0.1:{port}", worker_port, env
    finally:
        for p in _procs_with(temp_dir) + _procs_with(f"127.0.0.1:{port}"):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def test_run_on_two_nodes_survives_a_killed_worker_node(tmp_path, write_config, reference_run, two_node_cluster):
    address, worker_port, env = two_node_cluster
    ref_keys = sorted(read_manifest(Location.parse(str(reference_run[0]))).column("key").to_pylist())
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "datagen", "run", "--config", str(write_config(write={"min_rows_per_write": 20})),
           "--output", str(out)]
    for v in REAL_VIDEOS:
        cmd += ["--input", v]
    proc = subprocess.Popen(cmd, env={**env, "RAY_ADDRESS": address}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    raylets = [p for p in _procs_with(f"--node_manager_port={worker_port}") if "raylet" in " ".join(p.cmdline())]
    assert len(raylets) == 1, "could not find the worker node's raylet"
    deadline = time.monotonic() + 300
    while not any((out / "manifest").glob("*.parquet")):  # wait for the run to be well under way
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the run never committed a shard"
        time.sleep(0.05)
    raylets[0].send_signal(signal.SIGKILL)  # the whole worker node dies: raylet and its workers
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    rows = read_manifest(Location.parse(str(out))).select(["key", "shard"]).to_pylist()
    keys = sorted(r["key"] for r in rows)
    twice = {k for k in keys if keys.count(k) > 1}
    assert not twice, sorted({r["shard"] for r in rows if r["key"] in twice})  # the write attempts that repeated
    assert keys == ref_keys  # complete
    report = validate(str(out))
    assert report.ok, report.problems
