"""The safety filter with NudeNet's real 320n model on real frames."""
import av
import numpy as np
import pytest

from datagen.media import encode_image
from schemas import columns as C
from stages.safety import SafetyConfig, SafetyStage
from tests.pipeline.conftest import REAL_VIDEOS


def real_pairs(step: int = 30, per_video: int = 2) -> list[dict]:
    rows = []
    for path in REAL_VIDEOS:
        frames = []
        with av.open(path) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i % step == 0:
                    frames.append(f.to_ndarray(format="rgb24"))
                if len(frames) == 2 * per_video:
                    break
        for a, b in zip(frames[::2], frames[1::2]):
            rows.append({C.IMAGE_A: encode_image(a), C.IMAGE_B: encode_image(b), C.WIDTH: a.shape[1], C.HEIGHT: a.shape[0]})
    return rows


@pytest.fixture(scope="module")
def rows():
    return real_pairs()


@pytest.fixture(scope="module")
def stage():
    return SafetyStage(SafetyConfig())


def test_benign_real_frames_pass(stage, rows):
    out = stage({k: [r[k] for r in rows] for k in rows[0]})
    assert len(rows) >= 4 and out[C.FAILED_REASON] == [None] * len(rows), out[C.FAILED_DETAIL]


def test_the_model_really_runs_and_its_detections_decide(rows):
    # The demo's frames hold people: NudeNet finds faces and covered bodies on them. Counting a
    # benign class as "unsafe" must then drop those pairs, which shows the threshold is applied
    # to the real model's scores.
    strict = SafetyStage(SafetyConfig(classes=["FACE_FEMALE", "FACE_MALE", "FEMALE_BREAST_COVERED"], threshold=0.3))
    out = strict({k: [r[k] for r in rows] for k in rows[0]})
    dropped = [d for d, r in zip(out[C.FAILED_DETAIL], out[C.FAILED_REASON]) if r == "unsafe"]
    assert dropped and all("frame " in d for d in dropped)


def test_undecodable_frame_is_bad_image(stage):
    ok = encode_image(np.zeros((64, 64, 3), np.uint8))
    out = stage({C.IMAGE_A: [b"nope"], C.IMAGE_B: [ok], C.WIDTH: [64], C.HEIGHT: [64]})
    assert out[C.FAILED_REASON] == ["bad_image"]


def test_unknown_class_is_a_clear_error():
    with pytest.raises(ValueError, match="BREAST_NAKED"):
        SafetyStage(SafetyConfig(classes=["BREAST_NAKED"]))
