"""The pipeline's typed config: one section per stage, each the stage's own Config class."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen import UserError
from datagen.config import apply_overrides, from_dict, load_yaml, to_dict
from datagen.io.shards import ShardLimits
from datagen.redact import redact
from schemas.labels import LABEL_STAGES, TASK_LABELS
from stages.assemble import AssembleConfig
from stages.caption import CaptionConfig
from stages.depth import DepthConfig
from stages.edges import EdgesConfig
from stages.ingest import IngestConfig
from stages.pairs import PairsConfig
from stages.safety import SafetyConfig
from stages.segment import SegmentConfig
from stages.shots import ShotsConfig
from stages.text import TextConfig
from stages.verify import VerifyConfig

FILTER_STAGES = ("text", "safety")  # model stages right after pairs: they drop pairs, add no labels
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


@dataclass
class WriteConfig:
    max_samples_per_shard: int = 1000  # webdataset's usual shard size
    max_bytes_per_shard: int = 512 * 1024 * 1024  # ~0.5 GB shards stream well from object storage
    # Rows handed to one write task; a row is a pair with all its samples (~9 samples,
    # ~0.5 MB at 512 px): fewer, fuller shards, and bounded memory per write task.
    min_rows_per_write: int = 256
    storage_retries: int = 4  # a write attempt that meets a storage error is redone this often...
    storage_backoff_s: float = 2.0  # ...after 2, 4, 8, 16 s: rides out a ~30 s outage, then the run stops

    @property
    def limits(self) -> ShardLimits:
        return ShardLimits(self.max_samples_per_shard, self.max_bytes_per_shard)


@dataclass
class RayConfig:
    address: str | None = None  # None: $RAY_ADDRESS if set, else a local ray.init()
    num_cpus: int | None = None  # local runs only; None = all cores
    object_store_memory_bytes: int | None = None  # local runs only; bounds memory of in-flight blocks
    # A model stage's actors must be up within this; a vLLM engine that never starts (no
    # GPU memory, a stuck download) then ends the run naming the stage. Loading a 7B VLM
    # from a cold cache takes minutes.
    actor_start_timeout_s: float = 1200.0
    # Restarts of one model actor (crash, OOM kill, lost node) before its stage ends the
    # run; Ray retries the actor's batch after each restart, so no rows are lost.
    max_actor_restarts: int = 4


@dataclass
class PipelineConfig:
    filters: list[str] = field(default_factory=lambda: list(FILTER_STAGES))  # pair filters that run, in order
    labels: list[str] = field(default_factory=lambda: list(LABEL_STAGES))  # labelling stages that run
    smoke: bool = False  # set when labels come from tiny random models (demo without weights)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    shots: ShotsConfig = field(default_factory=ShotsConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    text: TextConfig = field(default_factory=TextConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    edges: EdgesConfig = field(default_factory=EdgesConfig)
    assemble: AssembleConfig = field(default_factory=AssembleConfig)
    write: WriteConfig = field(default_factory=WriteConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self):
        # The scan keeps its grid frames at the size the pairs stage writes them: one source of truth
        self.shots.scan.frame_short_side_px = self.pairs.short_side_px
        self.shots.scan.frame_max_long_side_px = self.pairs.max_long_side_px
        self.ingest.max_pairs_per_video = self.pairs.pairing.max_pairs_per_video  # windows share this cap
        unknown = [s for s in self.labels if s not in LABEL_STAGES]
        if unknown:
            raise UserError(f"config labels: unknown stage {unknown[0]!r}; allowed: {', '.join(LABEL_STAGES)}")
        unknown = [s for s in self.filters if s not in FILTER_STAGES]
        if unknown:
            raise UserError(f"config filters: unknown filter {unknown[0]!r}; allowed: {', '.join(FILTER_STAGES)}")
        if "verify" in self.labels and "caption" not in self.labels:
            raise UserError("config labels: 'verify' judges the caption's instruction; add 'caption' or drop 'verify'")
        for task, ratio in self.assemble.tasks.items():
            missing = [s for s in TASK_LABELS[task] if s not in self.labels]
            if ratio > 0 and missing:
                raise UserError(f"config assemble.tasks.{task} needs the {missing[0]!r} stage, which is not in "
                                f"labels; add it to labels or set assemble.tasks.{task}: 0")

    @property
    def model_stages(self) -> list[str]:
        """The actor-pool stages after pairs, in pipeline order."""
        return [*self.filters, *self.labels]

    def section(self, name: str) -> Any:
        """A stage's config as the stage gets it: the judge falls back to the captioner's model."""
        return self.verify.resolved(self.caption) if name == "verify" else getattr(self, name)

    def output_fingerprint(self) -> str:
        """Hash of everything that decides which samples a run writes: models, revisions,
        prompts, parameters. Not where they are served or stored, how fast, nor with which
        credentials: a resume may find its caption server on another host, more actors, or a
        rotated key."""
        data = {k: v for k, v in redact(to_dict(self)).items() if k not in SERVING_SECTIONS}
        return hashlib.sha256(json.dumps(_drop_serving(data), sort_keys=True).encode()).hexdigest()[:16]


# Where and how fast samples are made, not which: left out of the fingerprint.
SERVING_SECTIONS = ("ray", "write")  # the cluster; shard sizes, write batching and storage retries
SERVING_KEYS = frozenset({
    "resources", "device", "opencv_threads",  # actors, GPUs, threads
    "endpoints", "api_key_env", "requests_in_flight", "request_timeout_s", "retry_backoff_s",  # the caption server
    "storage_options",  # endpoints and credentials of the object store
})


def _drop_serving(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_serving(v) for k, v in d.items() if k not in SERVING_KEYS}
    return d


def load_config(path: str | Path | None, overrides: list[str] = ()) -> PipelineConfig:
    """A YAML file (or a profile name from datagen/profiles) plus `--set` overrides."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.exists() and (PROFILES_DIR / f"{path}.yaml").exists():
            p = PROFILES_DIR / f"{path}.yaml"
        data = load_yaml(p)
    return from_dict(PipelineConfig, apply_overrides(data, list(overrides)))
