"""transnet: video rows after shots -> the same rows, their shot boundaries from TransNetV2.

A model stage (an actor pool; `num_gpus` on the gpu profile) that runs only when
`shots.detector` is `transnetv2`. It reads the 48x27 frames the shots stage's one decode
pass kept (`scan_arrays.net_frames`), runs the network over several videos' windows, and
re-cuts the shots at its boundaries, and by default at the builtin detector's too
(`shots.transnet.with_builtin`: it finds the static-camera jump cuts the network misses);
the frame checks (black, blown, flash, fade) stay the scan's. The per-frame probabilities stay in `shots_json.transnet_probabilities`, so
another threshold re-cuts without decoding (`datagen.video.transnet.boundaries`); the
model, weights hash and threshold go to `shots_json.detector` (and from there to every
pair's facts). The network's frames and the thumbnails are dropped from `scan_arrays` here.
"""
from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np

from datagen.video.cuts import detect
from datagen.video.probe import ProbeInfo
from datagen.video.transnet import TransNet, boundaries, with_builtin
from stages.base import Stage, fail
from stages.ingest import FRAME_TABLE, PROBE
from stages.shots import SCAN, SHOTS, ShotsConfig, pack_arrays, shots_json, unpack_arrays


class TransNetStage(Stage):
    name: ClassVar[str] = "transnet"
    model_retries: ClassVar[int] = 2  # a model_error row is tried twice more in the run (1 s, 2 s apart)
    Config = ShotsConfig

    def __init__(self, config: ShotsConfig | None = None):
        self.config = config or ShotsConfig(detector="transnetv2")
        self.net = TransNet(self.config.transnet)  # once per actor: the packaged weights, on the GPU when there is one

    def process(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        arrays = []
        for row in rows:
            try:
                z = unpack_arrays(row[SCAN])
                arrays.append(z if "net_frames" in z else None)
            except Exception as e:  # a broken row must not take the batch down
                arrays.append(None)
                fail(row, self.name, "shots_error", f"{type(e).__name__}: {e}")
        todo = [k for k, z in enumerate(arrays) if z is not None]
        try:
            # every video's frames in one call: windows of short videos share forward passes
            probs = self.net.probabilities_many([arrays[k]["net_frames"] for k in todo])
        except Exception as e:
            for k in todo:
                fail(rows[k], self.name, "model_error", f"{type(e).__name__}: {e}")
            return rows
        for k, p in zip(todo, probs):
            self._recut(rows[k], arrays[k], p)
        for k, z in enumerate(arrays):
            if z is None and rows[k].get("failed_stage") is None:
                fail(rows[k], self.name, "shots_error", "scan_arrays holds no frames for TransNetV2: the shots stage "
                     "ran with another shots.detector than this stage's")
        return rows

    def _recut(self, row: dict[str, Any], z: dict[str, np.ndarray], p: np.ndarray) -> None:
        info = ProbeInfo.from_columns(row[PROBE], row[FRAME_TABLE])
        threshold = self.config.transnet.threshold
        old = json.loads(row[SHOTS])  # the shots stage's builtin boundaries, on the same decode pass
        given = boundaries(p, threshold)
        if self.config.transnet.with_builtin:
            given = with_builtin(given, old["cuts"], old.get("transitions", []))
        shots = detect(z["step_index"], z["thumbs"], info.times_s, self.config.cuts, given=given)
        data = json.loads(shots_json(shots, z["grid_index"], old["decoded_frames"], old["skip_nonref"],
                                     detector=self.net.provenance()))
        data["transnet_probabilities"] = [round(float(v), 4) for v in p]
        row[SHOTS] = json.dumps(data)
        for name in ("net_frames", "thumbs"):
            z.pop(name)
        row[SCAN] = pack_arrays(z)
