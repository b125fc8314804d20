"""The vllm-engine backend's engine loop on a scripted stand-in for vLLM's `LLM` (the real one: test_vllm_cpu.py)."""
import threading
from types import SimpleNamespace

from datagen.caption.request import BackendError
from datagen.caption.vllm_engine import EngineLoop


class ScriptedLLM:
    """`enqueue_chat` + `llm_engine.step()` as vLLM 0.32 has them. A chat's "messages" say
    how it ends: ("steps", n) finishes after n steps, ("gate", event) once the event is set,
    "refuse" is refused at enqueue, "crash" makes the step that runs it raise, "lost" finishes under an unknown id."""

    def __init__(self):
        self.llm_engine = self
        self.running: dict[str, object] = {}
        self._ids = 0
        self.steps = 0

    def enqueue_chat(self, convs, sampling_params, use_tqdm):
        (how,) = convs
        if how == "refuse":
            raise ValueError("prompt longer than max_model_len")
        rid = str(self._ids)
        self._ids += 1
        self.running[rid] = list(how) if isinstance(how, tuple) else how
        return [f"{rid}-1a2b3c4d"]  # vLLM 0.32 returns the internal id; outputs carry the external one

    def has_unfinished_requests(self):
        return bool(self.running)

    def step(self):
        self.steps += 1
        if "crash" in self.running.values():
            self.running.clear()
            raise RuntimeError("CUDA error: an illegal memory access")
        done = []
        for rid, how in list(self.running.items()):
            if how == "lost":
                del self.running[rid]
                done.append(SimpleNamespace(request_id="nobody", finished=True, outputs=[]))
                continue
            if how[0] == "steps":
                how[1] -= 1
            if (how[0] == "steps" and how[1] <= 0) or (how[0] == "gate" and how[1].is_set()):
                del self.running[rid]
                done.append(SimpleNamespace(request_id=rid, finished=True, outputs=[SimpleNamespace(text=f"answer {rid}")]))
        return done


def test_a_request_submitted_while_others_run_joins_them_and_finishes_first():
    loop = EngineLoop(ScriptedLLM())
    gate = threading.Event()
    slow = loop.submit(("gate", gate), None)
    quick = loop.submit(("steps", 2), None)
    assert quick.result(timeout=10) == "answer 1"
    assert not slow.done()  # still running in the engine, next to the request that joined it
    gate.set()
    assert slow.result(timeout=10) == "answer 0"


def test_a_refused_request_fails_alone_and_an_engine_error_fails_what_ran():
    llm = ScriptedLLM()
    loop = EngineLoop(llm)
    refused, fine = loop.submit("refuse", None), loop.submit(("steps", 1), None)
    assert isinstance(refused.result(timeout=10), BackendError) and "max_model_len" in str(refused.result())
    assert fine.result(timeout=10) == "answer 0"
    crashed = loop.submit("crash", None)
    assert isinstance(crashed.result(timeout=10), BackendError) and "illegal memory" in str(crashed.result())
    assert loop.submit(("steps", 1), None).result(timeout=10) == "answer 2"  # the loop serves on
    lost = loop.submit("lost", None)  # finishes under an id the loop never handed out
    assert isinstance(lost.result(timeout=10), BackendError)  # answered, never left waiting


def test_the_engine_is_free_for_a_barrier_call_only_when_the_loop_is_idle():
    loop = EngineLoop(ScriptedLLM())
    gate = threading.Event()
    running = loop.submit(("gate", gate), None)
    while not loop._running:  # the loop has taken it (state, not time)
        pass
    assert not loop.engine.acquire(blocking=False)  # a batch-wide LLM.chat would steal its outputs
    gate.set()
    running.result(timeout=10)
    assert loop.engine.acquire(timeout=10)
    loop.engine.release()
