"""GPU benchmark of the gpu profile: each model stage at its real model shapes, then the whole pipeline.

    python bench/gpu.py                # one GPU, under 8 minutes
    python bench/gpu.py --tiny         # the same code on CPU with tiny random models (checks the script)

The models are the real architectures built from their configs with random weights
(no weights can be downloaded): Qwen2.5-VL-7B-Instruct, sam2.1-hiera-large and
Depth-Anything-V2-Large, checked against their published parameter counts. Random
weights cost what real ones do, but their answers are noise (a random VLM fills its
strings to the token limit, so caption rows are mostly `bad_json`: the work is done all
the same). Caption runs on vLLM (`load_format: dummy`, no weight files) where vLLM is
importable, else on the transformers backend.

Each model stage first runs bare (its own process, so GPU memory is free again after it):
the stage object over batches of synthetic frame pairs; images/s per GPU and the GPU
busy share (NVML's utilization counter sampled every 0.1 s, the share of time a kernel
ran). Then the whole pipeline runs on N synthetic videos with all model stages sharing
the GPU, and prints its per-stage table (datagen/pipeline/throughput.py) with each model
stage's rate against its bare rate.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from bench.stages import FRAME_WH, pair_rows  # noqa: E402
from datagen.models.tiny_vision import _depth_config, _sam2_config, build_depth_anything, build_sam2  # noqa: E402
from datagen.models.tiny_vlm import build_tiny_vlm  # noqa: E402

TIME_LIMIT_S = 480  # the bound for one GPU; the total is printed against it
# Published sizes of the checkpoints whose shapes the random models take (within 1%).
PUBLISHED_PARAMS = {"caption": ("Qwen2.5-VL-7B-Instruct", 8.29e9), "segment": ("sam2.1-hiera-large", 224.4e6),
                    "depth": ("Depth-Anything-V2-Large", 335.3e6)}
STAGES = ("segment", "depth", "caption")  # caption last: vLLM's start is the longest


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


def _qwen25_vl_7b_config(token_ids: dict[str, int]):
    """Qwen/Qwen2.5-VL-7B-Instruct's config.json, with the special-token ids of our offline tokenizer."""
    from transformers import Qwen2_5_VLConfig

    return Qwen2_5_VLConfig(
        text_config=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                         rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                             "mrope_section": [16, 24, 24]},
                         bos_token_id=token_ids["<|endoftext|>"], eos_token_id=token_ids["<|im_end|>"],
                         pad_token_id=token_ids["<|endoftext|>"]),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
        image_token_id=token_ids["<|image_pad|>"], video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"], vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def _token_ids(model_dir: Path) -> dict[str, int]:
    from transformers import AutoTokenizer

    from datagen.models.tiny_vlm import SPECIAL_TOKENS

    tok = AutoTokenizer.from_pretrained(model_dir)
    return {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}


def build_vlm(out: Path, tiny: bool, weights: bool) -> Path:
    """The tiny random Qwen2-VL, or the 7B-shaped Qwen2.5-VL beside its tokenizer and image
    processor; `weights=False` writes no weight files (vLLM's dummy loader fills them)."""
    if (out / "config.json").exists():
        return out
    build_tiny_vlm(out)
    if tiny:
        return out
    from transformers import Qwen2_5_VLForConditionalGeneration

    for f in out.glob("*.safetensors"):
        f.unlink()
    config = _qwen25_vl_7b_config(_token_ids(out))
    if not weights:
        config.save_pretrained(out)
        return out
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):  # random init of 8 B parameters: seconds on a GPU, minutes on CPU
        model = Qwen2_5_VLForConditionalGeneration(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(out)
    return out


def check_shapes() -> list[str]:
    """The large configs on the meta device (no memory): their parameter counts against the published ones."""
    from transformers import DepthAnythingForDepthEstimation, Qwen2_5_VLForConditionalGeneration, Sam2VideoModel

    from datagen.models.tiny_vlm import SPECIAL_TOKENS

    ids = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    builders = {"caption": lambda: Qwen2_5_VLForConditionalGeneration(_qwen25_vl_7b_config(ids)),
                "segment": lambda: Sam2VideoModel(_sam2_config("large")),
                "depth": lambda: DepthAnythingForDepthEstimation(_depth_config("large"))}
    lines = []
    for stage, build in builders.items():
        with torch.device("meta"):
            n = sum(p.numel() for p in build().parameters())
        name, published = PUBLISHED_PARAMS[stage]
        if abs(n / published - 1) > 0.01:
            raise SystemExit(f"gpu.shape.{stage}: {n / 1e6:.1f} M params, but {name} has {published / 1e6:.1f} M")
        lines.append(f"gpu.shape.{stage}: {n / 1e6:.1f} M params ratio={n / published:.3f} vs {name} (published)")
    return lines


def stage_config(stage: str, tiny: bool, model_dir: Path, device: str, one_gpu_share: bool = False):
    """Stage class and config for the bench: the gpu profile's section with our random model."""
    from datagen.pipeline.config import load_config

    cfg = load_config("cpu" if tiny else "gpu")
    section = getattr(cfg, stage)
    if stage == "segment":
        section.model = str(model_dir / "sam2") if (model_dir / "sam2").exists() else str(
            build_sam2(model_dir / "sam2", "tiny" if tiny else "large"))
        section.min_pred_iou = section.min_stability = 0.0  # random scores: keep the masks, do the work
    elif stage == "depth":
        section.model = str(model_dir / "depth") if (model_dir / "depth").exists() else str(
            build_depth_anything(model_dir / "depth", "tiny" if tiny else "large"))
        if tiny:
            section.input_px = 112
    else:
        backend = "vllm-engine" if vllm_available() and (not tiny or os.environ.get("BENCH_GPU_VLLM")) else "transformers"
        section.model = str(build_vlm(model_dir / "vlm", tiny, weights=backend == "transformers"))
        section.backend = backend
        section.max_retries = 0  # a random model's answers fail validation; retrying them measures nothing
        section.max_new_tokens = 160 if tiny else 256  # a real answer is ~150-300 tokens
        section.box_units = "pixels"
        if tiny:
            section.max_image_side_px, section.max_text_chars, section.max_objects = 112, 12, 0
        if backend == "vllm-engine":
            share = 0.45 if one_gpu_share else 0.85
            section.engine_args = {**section.engine_args, "load_format": "dummy", "gpu_memory_utilization": share}
    if hasattr(section, "device"):
        section.device = device
    return section


class GpuBusy:
    """Share of wall time a kernel ran on GPU `index`: NVML's utilization counter, sampled
    every 0.1 s in a thread (device-wide: every process on the GPU counts)."""

    def __init__(self, index: int = 0):
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # noqa: BLE001 -- no NVML (CPU run, or nvidia-ml-py missing): no share
            self._nvml = self._handle = None

    def _sample(self):
        while not self._stop.wait(0.1):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __enter__(self):
        if self._handle is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._handle is not None:
            self._thread.join()

    @property
    def share(self) -> float | None:
        return sum(self.samples) / (100 * len(self.samples)) if self.samples else None


def busy_text(share: float | None) -> str:
    return f"{share:.2f}" if share is not None else "n/a (no NVML)"


def bare_stage(stage: str, tiny: bool, model_dir: Path, device: str, seconds: float) -> dict[str, Any]:
    """One stage object over batches for `seconds` after one warm-up batch (its model load excluded)."""
    section = stage_config(stage, tiny, model_dir, device)
    from datagen.pipeline.run import MODEL_STAGES

    torch.set_num_threads(max(1, int(section.resources.num_cpus)))  # what Ray gives the stage's actor

    t0 = time.perf_counter()
    obj = MODEL_STAGES[stage](section)
    load_s = time.perf_counter() - t0
    bs = section.resources.batch_size
    rows = pair_rows(bs, *FRAME_WH["tiny" if tiny else "large"])
    batch = {k: [r[k] for r in rows] for k in rows[0]}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    obj(dict(batch))
    sync()
    done = failed = 0
    # as many batches at once as the stage's actor runs (resources.batches_in_flight: the VLM's
    # engine loop keeps its slots full across them); one at a time for the others
    in_flight = section.resources.batches_in_flight
    with GpuBusy() as busy, ThreadPoolExecutor(in_flight) as pool:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds or done < 2 * bs:
            outs = list(pool.map(lambda _: obj(dict(batch)), range(in_flight)))
            sync()
            done += bs * in_flight
            failed += sum(f is not None for out in outs for f in out["failed_stage"])
        wall = time.perf_counter() - start
    return {"stage": stage, "images_per_s": 2 * done / wall, "busy": busy.share, "batch_size": bs, "in_flight": in_flight,
            "rows": done, "failed_rows": failed, "load_s": load_s, "backend": getattr(section, "backend", "")}


def synthetic_videos(out: Path, n: int, tiny: bool) -> list[str]:
    """~8 s clips of 4 shots (static, pan, moving object, pan), each video its own textures
    (equal content would make them one video: ingest drops copies)."""
    from datagen.video.synthetic import Segment, write_video

    out.mkdir(parents=True, exist_ok=True)
    w, h = (320, 192) if tiny else (960, 544)
    paths = [out / f"clip{i:03d}.mp4" for i in range(n)]
    jobs = [(p, [Segment("static", 48, seed=10 * i + 1), Segment("pan", 48, speed_px=1.5, seed=10 * i + 2),
                 Segment("object", 49, speed_px=4.0, seed=10 * i + 3), Segment("pan", 40, speed_px=-1.5, seed=10 * i + 4)])
            for i, p in enumerate(paths) if not p.exists()]
    if jobs:
        with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:  # ~3 s a clip
            list(pool.map(write_video, *zip(*jobs), [w] * len(jobs), [h] * len(jobs)))
    return [str(p) for p in paths]


def pipeline_config(tiny: bool, model_dir: Path, device: str):
    """The gpu profile (cpu on --tiny) with the random models; on one GPU the model stages
    share it: caption half, segment and depth a quarter each."""
    from datagen.pipeline.config import load_config

    cfg = load_config("cpu" if tiny else "gpu")
    for stage in STAGES:
        setattr(cfg, stage, stage_config(stage, tiny, model_dir, device, one_gpu_share=True))
    if tiny:
        cfg.pairs.short_side_px, cfg.pairs.max_long_side_px = 128, 256
        cfg.pairs.pairing.max_pairs_per_video = 3
        cfg.ray.num_cpus = 2
    else:
        cfg.caption.resources.num_gpus = 0.5
        cfg.segment.resources.num_gpus = cfg.depth.resources.num_gpus = 0.25
        cfg.ray.num_cpus = os.cpu_count()
    cfg.smoke = True
    cfg.__post_init__()  # the scan's frame size follows the pairs' (as loading a config does)
    return cfg


def run_whole_pipeline(cfg, videos: list[str], out: Path) -> tuple[dict, float, float | None]:
    import ray

    from datagen.pipeline.run import run_pipeline

    os.environ.setdefault("PYTHONPATH", str(REPO))
    with GpuBusy() as busy:
        summary = run_pipeline(cfg, videos, str(out))
    if ray.is_initialized():
        ray.shutdown()
    return summary.stats, summary.seconds, busy.share


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random models on CPU: checks the script, measures nothing")
    ap.add_argument("--videos", type=int, default=None, help="synthetic videos for the pipeline (default 12; --tiny 2)")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per bare stage (default 20; --tiny 3)")
    ap.add_argument("--stages", default=",".join(STAGES), help="bare stages to run, comma-separated")
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--work-dir", default=None, help="models, videos and the dataset (default: a temp dir)")
    ap.add_argument("--bare-stage", default=None, help=argparse.SUPPRESS)  # child process: one bare stage
    args = ap.parse_args(argv)
    device = "cpu" if args.tiny else "cuda"
    if not args.tiny and not torch.cuda.is_available():
        print("gpu.bench: skipped: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU "
              "machine, or pass --tiny to check the script on CPU", flush=True)
        return 2
    seconds = args.seconds if args.seconds is not None else (3.0 if args.tiny else 20.0)
    if args.bare_stage:  # child: print one JSON line for the parent
        print("RESULT " + json.dumps(bare_stage(args.bare_stage, args.tiny, Path(args.work_dir), device, seconds)), flush=True)
        return 0

    t_start = time.perf_counter()
    logging.getLogger("ray").setLevel(logging.WARNING)
    tag = "[tiny,cpu]" if args.tiny else f"[{torch.cuda.get_device_name(0)}]"
    for line in check_shapes():
        print(line, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        (work / "models").mkdir(parents=True, exist_ok=True)
        bare: dict[str, dict] = {}
        for stage in [s for s in args.stages.split(",") if s]:
            cmd = [sys.executable, __file__, "--bare-stage", stage, "--work-dir", str(work / "models"),
                   "--seconds", str(seconds)] + (["--tiny"] if args.tiny else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            result = next((json.loads(ln[7:]) for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if result is None:
                print(f"gpu.{stage}.bare{tag}: FAILED (exit {proc.returncode}): "
                      f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}", flush=True)
                continue
            bare[stage] = r = result
            print(f"gpu.{stage}.bare{tag}: {r['images_per_s']:.2f} images/s per GPU gpu_busy={busy_text(r['busy'])} "
                  f"bs={r['batch_size']} rows={r['rows']} failed_rows={r['failed_rows']} load_s={r['load_s']:.0f}"
                  + (f" backend={r['backend']}" if r["backend"] else ""), flush=True)
        if not args.no_pipeline:
            n = args.videos or (2 if args.tiny else 12)
            videos = synthetic_videos(work / "videos", n, args.tiny)
            cfg = pipeline_config(args.tiny, work / "models", device)
            stats, wall, busy = run_whole_pipeline(cfg, videos, work / f"dataset-{time.time_ns()}")
            pairs = stats["stages"]["ingest+shots+pairs"]["pairs"]
            print(f"gpu.pipeline{tag}: {2 * pairs / wall:.2f} images/s end to end ({n} videos, {pairs} pairs, "
                  f"{stats['samples']} samples, {wall:.0f} s) gpu_busy={busy_text(busy)}", flush=True)
            for s in stats["throughput"]["stages"]:
                base = bare.get(s["stage"])
                rate = (f"{2 * s['rows_per_s']:.2f} images/s" if s["stage"] in STAGES else f"{s['rows_per_s']:.2f} rows/s")
                ratio = f" ratio={2 * s['rows_per_s'] / base['images_per_s']:.2f} vs gpu.{s['stage']}.bare" if base else ""
                print(f"gpu.pipeline.{s['stage']}{tag}: {rate} busy_share={s['busy_share']:.2f} "
                      f"workers={s['workers']}{ratio}", flush=True)
            print(f"gpu.pipeline.limiting{tag}: {stats['throughput']['limiting']}", flush=True)
            # Sizing (README, "CPUs per GPU"): CPU-stage task seconds per pair at this run's pair rate.
            cpu_rows = [s for s in stats["throughput"]["stages"] if s["stage"] not in STAGES and s["stage"] != "write"]
            total_task_s = sum(s["busy_share"] * s["workers"] * s["rows_out"] / s["rows_per_s"]  # = task seconds
                               for s in cpu_rows if s["rows_per_s"] > 0)
            task_s = total_task_s / max(1, pairs)
            print(f"gpu.pipeline.cpu_stage_s_per_pair{tag}: {task_s:.3f} task-s per pair -> {task_s * pairs / wall:.1f} "
                  f"CPUs busy at {pairs / wall:.2f} pairs/s on 1 GPU", flush=True)
    total = time.perf_counter() - t_start
    print(f"gpu.total_wall{tag}: {total:.0f} s ratio={total / TIME_LIMIT_S:.2f} vs limit {TIME_LIMIT_S} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
