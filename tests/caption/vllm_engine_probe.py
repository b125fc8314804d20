"""Run the caption and verify stages' vllm-engine backend on a model dir; prints one JSON line of results.

Runs in the vLLM venv (tests/caption/test_vllm_cpu.py starts it there); the `__main__`
guard is needed because vLLM's engine starts worker processes.
"""
import json
import sys
import threading

from tests.caption.frames import batch
from stages.caption import CaptionConfig, CaptionStage
from stages.verify import VerifyConfig, VerifyStage
from tests.verify.frames import captioned_batch

if __name__ == "__main__":
    cfg = CaptionConfig(backend="vllm-engine", model=sys.argv[1], device="cpu", dtype="float32",
                        max_image_side_px=112, max_text_chars=12, max_objects=0, max_new_tokens=160, max_retries=1,
                        engine_args={"max_model_len": 4096, "limit_mm_per_prompt": {"image": 2, "video": 0}})
    stage = CaptionStage(cfg)
    rows = batch(3)
    out = stage(rows)
    singles = [stage({k: [v[i]] for k, v in rows.items()}) for i in range(3)]
    # two batches at once through the engine loop (an actor with batches_in_flight 2)
    together = [None, None]
    threads = [threading.Thread(target=lambda k=k: together.__setitem__(k, stage(batch(2, seed=5 + k)))) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alone = [stage(batch(2, seed=5 + k)) for k in (0, 1)]
    loop = stage.backend
    stage.backend = type("Barrier", (), {"generate": loop.generate, "model_id": loop.model_id,
                                         "revision": loop.revision})()  # generate only: one LLM.chat per attempt
    barrier = stage(rows)
    stage.backend = loop
    del stage  # its engine's memory, before the judge's engine starts
    judge = VerifyStage(VerifyConfig(backend="vllm-engine", model=sys.argv[1], device="cpu", dtype="float32",
                                     max_image_side_px=112, max_failing_parts=0, max_new_tokens=64, min_score=1,
                                     max_retries=1, engine_args=cfg.engine_args))
    verified = judge(captioned_batch(3))
    print("RESULT " + json.dumps({"batch": out, "singles": singles, "verify": verified, "together": together,
                                  "alone": alone, "barrier": barrier}, default=lambda b: None),
          flush=True)
