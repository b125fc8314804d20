"""End-to-end pipeline throughput on the bundled clips (CPU demo profile), the share of
time per stage, the pair store's size, and relabels of caption and of depth vs a full
re-run, all in one process.

Prints `name: value unit ratio=R vs BASELINE` lines.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402

from datagen.io.pair_store import pair_store_bytes, read_pair_index  # noqa: E402
from datagen.io.storage import Location  # noqa: E402
from datagen.pipeline.demo import BUNDLED_VIDEOS, demo_config  # noqa: E402
from datagen.pipeline.relabel import relabel  # noqa: E402
from datagen.pipeline.run import MODEL_STAGES, run_pipeline  # noqa: E402
from schemas import columns as C  # noqa: E402
from schemas.labels import relabel_plan  # noqa: E402
from stages.assemble import AssembleStage  # noqa: E402
from stages.ingest import IngestStage, source_rows  # noqa: E402
from stages.pairs import PairsStage  # noqa: E402
from stages.shots import ShotsStage  # noqa: E402


def video_seconds(paths: list[str]) -> float:
    total = 0.0
    for p in paths:
        with av.open(p) as c:
            s = c.streams.video[0]
            total += float(s.duration * s.time_base) if s.duration else float(c.duration or 0) / 1e6
    return total


def synthetic_clips(where: Path, n: int) -> list[str]:
    """`n` distinct 30 s clips (pan, object motion and zoom shots at 10 fps, 320x240)."""
    from datagen.video.synthetic import Segment, write_video

    kinds = ("pan", "object", "zoom")
    paths = []
    for i in range(n):
        path = str(where / f"clip{i:03d}.mp4")
        write_video(path, [Segment(kinds[(i + k) % 3], 100, speed_px=2.0, seed=10 * i + k) for k in range(3)],
                    width=320, height=240, fps=10)
        paths.append(path)
    return paths


def stage_shares(cfg, inputs: list[str]) -> dict[str, float]:
    """Seconds per stage, each run bare (no Ray) over the same rows, in pipeline order."""
    batch = C.rows_to_batch(source_rows(inputs))
    seconds = {}
    chain = [("ingest", IngestStage(cfg.ingest)), ("shots", ShotsStage(cfg.shots)), ("pairs", PairsStage(cfg.pairs))]
    chain += [(n, MODEL_STAGES[n](cfg.section(n))) for n in cfg.model_stages]
    chain += [("assemble", AssembleStage(cfg.assemble))]
    for name, stage in chain:
        t = time.perf_counter()
        batch = stage(batch)
        seconds[name] = time.perf_counter() - t
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", action="append", default=[])
    ap.add_argument("--synthetic", type=int, default=0,
                    help="add this many 30 s synthetic clips (a bigger corpus: the fixed start costs weigh less)")
    args = ap.parse_args()
    inputs = args.input or [str(p) for p in sorted(BUNDLED_VIDEOS.glob("*")) if p.suffix in (".avi", ".mp4")]
    clips = tempfile.TemporaryDirectory(prefix="bench-pipeline-clips-")
    inputs += synthetic_clips(Path(clips.name), args.synthetic)
    cfg = demo_config(say=lambda line: print(f"# {line}"))
    vsec = video_seconds(inputs)
    shares = stage_shares(cfg, inputs)  # the baseline: every stage bare, one after the other
    bare_s = sum(shares.values())
    with tempfile.TemporaryDirectory() as d:
        run_pipeline(cfg, inputs, f"{d}/warm")  # Ray start-up and model caches out of the measurement
        t = time.perf_counter()
        full = run_pipeline(cfg, inputs, f"{d}/full")
        full_s = time.perf_counter() - t
        n = full.stats["samples"]
        print(f"pipeline_samples: {n / full_s:.2f} samples/s ratio={bare_s / full_s:.2f} vs bare stages in sequence "
              f"({n} samples in {full_s:.1f} s; bare {bare_s:.1f} s)")
        print(f"pipeline_video: {vsec / full_s:.2f} video-s/s ratio={bare_s / full_s:.2f} vs bare stages in sequence "
              f"({vsec:.1f} s of video)")
        loc = Location.parse(f"{d}/full")
        store_bytes, pairs = pair_store_bytes(loc), read_pair_index(loc).num_rows
        shard_bytes = sum(loc.size(p) for p in loc.glob("shards/*/*.tar"))
        print(f"pair_store_bytes_per_pair: {store_bytes / pairs:.0f} bytes ratio={store_bytes / (store_bytes + shard_bytes):.2f} "
              f"vs whole dataset (pair store {store_bytes / 1e6:.1f} MB + shards {shard_bytes / 1e6:.1f} MB, {pairs} pairs)")
        for stage, target in (("caption", 3), ("depth", 5)):
            t = time.perf_counter()
            relabel(f"{d}/full", f"{d}/relabel-{stage}", [stage], cfg)
            relabel_s = time.perf_counter() - t
            print(f"relabel_{stage}: {relabel_s:.1f} s ratio={full_s / relabel_s:.1f} vs full run ({full_s:.1f} s; "
                  f"target >= {target}x)")
            # What a re-label can save, estimated from compute: a new model changes every label, so the
            # stages it re-runs (the stage and its dependents) cost what they cost in the full run, and
            # the rest is skipped. An estimate, not a bound: Ray overlaps stages on the cores.
            rerun = [s for s in relabel_plan([stage]) if s in cfg.model_stages]
            must = sum(shares[s] for s in rerun)
            print(f"relabel_{stage}_compute_share: {bare_s / must:.1f} x ratio={bare_s / must:.1f} vs full run, bare "
                  f"stages ({'+'.join(rerun)} = {100 * must / bare_s:.0f} % of the bare full run's {bare_s:.1f} s)")
    for name, s in shares.items():
        print(f"stage_share_{name}: {100 * s / bare_s:.1f} % ratio={s / bare_s:.2f} vs all stages ({s:.1f} s bare)")


if __name__ == "__main__":
    main()
