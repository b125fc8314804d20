"""The vllm-server backend against a scripted OpenAI-compatible server: retries, failures, concurrency."""
import base64
import io
import json
import re
import socket
import threading

import numpy as np
from PIL import Image

from datagen.media import encode_image
from schemas import columns as C
from stages.caption import CaptionConfig, CaptionStage
from tests.caption.fake_openai import FakeOpenAI

W, H = 320, 240  # frame A; sent to the model at max side 112 -> 112x84
SENT_W, SENT_H = 112, 84


def answer(**over):
    good = {
        "caption_a": "a dog on grass", "caption_b": "a dog lying on grass", "differences": ["the dog lay down"],
        "instruction": "make the dog lie down", "edit_type": "pose",
        "objects": [{"name": "dog", "box": [28, 21, 56, 63]}],
    }
    return json.dumps({**good, **over})


def script(body, n):
    case = case_of(body)
    if case == "good":
        return 200, answer()
    if case == "bad_then_good":
        return 200, ('{"caption_a": "a dog' if n == 1 else answer())
    if case == "malformed":
        return 200, "the dog lies down"
    if case == "missing":
        return 200, json.dumps({k: v for k, v in json.loads(answer()).items() if k != "instruction"})
    if case == "box":
        return 200, answer(objects=[{"name": "dog", "box": [28, 21, 200, 63]}])
    if case == "refusal":
        return 200, "I'm sorry, I can't help with that."
    if case == "down":
        return 503, "overloaded"
    raise AssertionError(case)


def case_of(body):
    text = body["messages"][-1]["content"][-1]["text"]
    return re.search(r"case: (\w+)", text).group(1)


def rows(*cases):
    rng = np.random.default_rng(0)
    out = []
    for case in cases:
        a, b = (rng.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(2))
        out.append({C.IMAGE_A: encode_image(a), C.IMAGE_B: encode_image(b), C.WIDTH: W, C.HEIGHT: H,
                    C.FACTS: json.dumps({"case": case, "gap_s": 0.5})})
    return {k: [r[k] for r in out] for k in out[0]}


def stage(endpoints, **over):
    kw = dict(backend="vllm-server", model="tiny-vlm", revision="r1", endpoints=endpoints,
              max_image_side_px=112, max_retries=2, retry_backoff_s=0.0, request_timeout_s=10)
    cfg = CaptionConfig(**{**kw, **over})
    return CaptionStage(cfg)


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # nothing listens once closed


def test_good_answers_bad_answers_and_retries_become_captions_or_failure_rows():
    with FakeOpenAI(script, case_of) as server:
        out = stage([server.url])(rows("good", "bad_then_good", "malformed", "missing", "box", "refusal"))
    reasons = out[C.FAILED_REASON]
    assert reasons == [None, None, "invalid_json", "missing_fields", "box_out_of_range", "refusal"]
    caption = json.loads(out[C.CAPTION][0])
    assert caption["instruction"] == "make the dog lie down"
    assert caption["objects"][0]["box"] == [28 * W // SENT_W, 21 * H // SENT_H, 56 * W // SENT_W, 63 * H // SENT_H]
    assert out[C.CAPTION][1] == out[C.CAPTION][0]
    assert all(out[C.FAILED_STAGE][i] == "caption" and "after 3 attempts" in out[C.FAILED_DETAIL][i] for i in range(2, 6))
    assert server.calls == {"good": 1, "bad_then_good": 2, "malformed": 3, "missing": 3, "box": 3, "refusal": 3}
    prov = json.loads(out[C.provenance_column("caption")][0])
    assert prov["model_id"] == "tiny-vlm" and prov["revision"] == "r1" and prov["params"]["backend"] == "vllm-server"
    assert out[C.provenance_column("caption")][2] is None


def test_request_carries_images_as_base64_parts_and_the_schema_and_retries_sample():
    with FakeOpenAI(script, case_of) as server:
        stage([server.url], temperature=0.0, retry_temperature=0.7)(rows("bad_then_good"))
    first, retry = server.bodies
    parts = first["messages"][1]["content"]
    images = [Image.open(io.BytesIO(base64.b64decode(p["image_url"]["url"].split(",", 1)[1])))
              for p in parts if p["type"] == "image_url"]
    assert [(im.format, im.size) for im in images] == [("JPEG", (SENT_W, SENT_H))] * 2
    assert "112 x 84 pixels" in parts[-1]["text"] and "gap_s: 0.5" in parts[-1]["text"]
    schema = first["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["objects"]["items"]["properties"]["box"]["prefixItems"][0]["maximum"] == SENT_W
    assert first["model"] == "tiny-vlm"
    assert (first["temperature"], retry["temperature"]) == (0.0, 0.7) and first["seed"] != retry["seed"]


def test_unguided_requests_send_no_response_format():
    with FakeOpenAI(script, case_of) as server:
        out = stage([server.url], guided_decoding=False)(rows("good"))
    assert out[C.FAILED_REASON] == [None] and "response_format" not in server.bodies[0]


def test_a_dead_endpoint_is_retried_on_the_next_one_and_a_down_backend_fails_rows():
    with FakeOpenAI(script, case_of) as server:
        out = stage([closed_port_url(), server.url])(rows("good", "good", "good", "down"))
    assert out[C.FAILED_REASON] == [None, None, None, "backend_error"]
    assert "HTTP 503" in out[C.FAILED_DETAIL][3] or "Connect" in out[C.FAILED_DETAIL][3]
    out = stage([closed_port_url()], max_retries=1)(rows("good"))  # nothing listens: marked, not raised
    assert out[C.FAILED_REASON] == ["backend_error"] and "ConnectError" in out[C.FAILED_DETAIL][0]


def test_requests_are_in_flight_together():
    n = 6
    with FakeOpenAI(script, case_of) as server:
        server.gate = threading.Barrier(n)  # each handler waits until all n requests have arrived
        out = stage([server.url], requests_in_flight=8)(rows(*["good"] * n))
    assert out[C.FAILED_REASON] == [None] * n and server.max_in_flight == n


def test_a_retry_is_queued_while_the_batch_s_slow_request_is_still_out():
    # The slow request answers only once the other request's retry has arrived: a retry
    # that waited for the whole batch (a barrier) would never come, and the slow one times out.
    retried = threading.Event()

    def slow_script(body, n):
        if case_of(body) == "bad_then_good" and n == 2:
            retried.set()
        if case_of(body) == "slow":
            return 200, answer() if retried.wait(timeout=10) else answer(instruction="barrier")
        return script(body, n)

    with FakeOpenAI(slow_script, lambda body: case_of(body)) as server:
        out = stage([server.url])(rows("slow", "bad_then_good"))
    assert out[C.FAILED_REASON] == [None, None]
    assert json.loads(out[C.CAPTION][0])["instruction"] == "make the dog lie down"


def test_batches_in_flight_on_one_actor_share_its_requests():
    # Ray runs an actor's batches in threads when resources.batches_in_flight > 1: two
    # batches of 2 must reach the server together (4 at once), not one batch after the other.
    with FakeOpenAI(script, case_of) as server:
        server.gate = threading.Barrier(4)
        s = stage([server.url], requests_in_flight=8)
        outs = [None, None]

        def call(k):
            outs[k] = s(rows("good", "good"))

        threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [o[C.FAILED_REASON] for o in outs] == [[None, None]] * 2 and server.max_in_flight == 4
