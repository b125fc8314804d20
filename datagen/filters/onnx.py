"""onnxruntime sessions for the filters: the GPU where onnxruntime-gpu is installed, else the CPU."""
from __future__ import annotations

from typing import Any


def providers(device: str) -> list[str]:
    """Execution providers for `device` ("auto", "cpu", "cuda"); auto takes CUDA only when this onnxruntime has it."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in have:
        from datagen import UserError

        raise UserError("device 'cuda' for an ONNX filter needs onnxruntime-gpu (pip install onnxruntime-gpu); "
                        "or set the filter's device: cpu")
    if device in ("auto", "cuda") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(model_path: str, device: str, num_threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, num_threads)  # the stage's CPU share, not every core of the node
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_path, opts, providers=providers(device))
