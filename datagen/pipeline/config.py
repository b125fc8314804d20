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
from stages.assemble import TASK_LABELS, AssembleConfig
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
LABEL_STAGES = ("caption", "verify", "segment", "depth", "edges")
PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


@dataclass
class WriteConfig:
    max_samples_per_shard: int = 1000  # webdataset's usual shard size
    max_bytes_per_shard: int = 512 * 1024 * 1024  # ~0.5 GB shards stream well from object storage
    # Rows (samples + progress rows) handed to one write task: fewer, fuller shards; bounded memory.
    min_rows_per_write: int = 2000

    @property
    def limits(self) -> ShardLimits:
        return ShardLimits(self.max_samples_per_shard, self.max_bytes_per_shard)


@dataclass
class RayConfig:
    address: str | None = None  # None: $RAY_ADDRESS if set, else a local ray.init()
    num_cpus: int | None = None  # local runs only; None = all cores
    object_store_memory_bytes: int | None = None  # local runs only; bounds memory of in-flight blocks


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
        """Hash of everything that decides which samples a run writes (not where or how fast)."""
        data = to_dict(self)
        data.pop("ray")
        return hashlib.sha256(json.dumps(_drop_resources(data), sort_keys=True).encode()).hexdigest()[:16]


def _drop_resources(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_resources(v) for k, v in d.items() if k != "resources"}
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
