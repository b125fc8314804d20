"""Costs that grow with the corpus: resume at 10k / 100k / 1M committed samples, listing
objects on S3 (5k and 20k by default; `--list-objects 100000` for 100k, which takes moto
about half an hour per listing on this machine), the bytes and requests of a run whose
videos and output are on S3, and the pairs and peak RSS of a 2-hour video against a
2-minute one (datagen/video/windows.py).

Resume: a dataset directory of committed manifest and progress parts is written with the
project's table writers (datagen/pipeline/synthetic.py, no shards); a fresh driver process
then does what `datagen run` does before its first task (finish compaction, clean partial
writes, start Ray and the ResumeIndex actor) and runs one ingest-sized task that asks
about its 8 videos. Measured: its peak RSS, the seconds until that task has its answer,
and the resume bytes the task receives (its fn_kwargs and the answer), against the old
design's bytes (the pickled ResumeState every task used to receive).
S3: a moto server behind a counting layer (tests/s3_counting.py).

Prints `name: value unit ratio=R vs BASELINE` lines.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 8  # videos per ingest task (IngestConfig's default batch_size)


def peak_rss_bytes() -> int:
    """This process's RSS high-water mark. Not ru_maxrss: Linux carries that over exec from
    the parent (here the bench process, which just built the directory)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def probe(directory: str) -> dict:
    """Run in a fresh process: a resumed run's start, up to its first task's answer."""
    import ray
    from ray import cloudpickle

    from datagen.io.compact import TABLES, finish_pending
    from datagen.io.storage import Location
    from datagen.pipeline.commit import clean_partial_writes
    from datagen.pipeline.progress import ResumeClient
    from datagen.pipeline.synthetic import video_uri

    t0 = time.perf_counter()
    loc = Location.parse(directory)
    for folder in TABLES:
        finish_pending(loc, folder)
    clean_partial_writes(loc)
    t_ray = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_resume = time.perf_counter()
    client = ResumeClient.start(directory)
    uris = [video_uri(i * 997) for i in range(BATCH)]

    @ray.remote(num_cpus=0)
    def first_task(resume, uris):
        answer = resume.sources_done(uris, [f"0:{i}" for i in range(len(uris))])
        return answer, len(pickle.dumps(answer))

    answer, answer_bytes = ray.get(first_task.remote(client, uris))
    t_first = time.perf_counter()
    out = {"first_task_s": t_first - t0, "resume_s": t_first - t_resume, "ray_init_s": t_resume - t_ray,
           "driver_peak_rss_bytes": peak_rss_bytes(),
           "task_resume_bytes": len(cloudpickle.dumps({"resume": client})) + answer_bytes,
           "samples": client.summary()["samples_committed"]}
    ray.shutdown()
    return out


def bench_resume(sizes: list[int], work: Path) -> None:
    from ray import cloudpickle

    from datagen.io.storage import Location
    from datagen.pipeline.progress import ResumeState
    from datagen.pipeline.synthetic import write_committed

    results = {}
    for n in sizes:
        d = work / f"resume{n}"
        t = time.perf_counter()
        write_committed(Location.parse(str(d)), n, pending_videos=2)
        build_s = time.perf_counter() - t
        res = subprocess.run([sys.executable, __file__, "--probe", str(d)], capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-3000:])
        r = json.loads(res.stdout.strip().splitlines()[-1])
        assert r["samples"] == n, r
        # baseline: the old design pickled the whole state into every CPU task's fn_kwargs
        t = time.perf_counter()
        state = ResumeState.load(Location.parse(str(d)))  # what the actor does when it starts
        r["load_s"] = time.perf_counter() - t
        r["old_task_resume_bytes"] = len(cloudpickle.dumps(state))
        results[n] = r
        print(f"# {n} samples: directory written in {build_s:.1f} s; Ray start {r['ray_init_s']:.1f} s", flush=True)
    base = results[sizes[0]]
    label = lambda n: f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"  # noqa: E731
    for n, r in results.items():
        name = label(n)
        print(f"resume_bytes_per_task_{name}: {r['task_resume_bytes']} B "
              f"ratio={r['task_resume_bytes'] / base['task_resume_bytes']:.2f} vs {label(sizes[0])}")
        print(f"old_resume_bytes_per_task_{name}: {r['old_task_resume_bytes'] / 1e6:.2f} MB "
              f"ratio={r['old_task_resume_bytes'] / r['task_resume_bytes']:.0f} vs new design")
        print(f"resume_start_{name}: {r['resume_s']:.2f} s ratio={r['resume_s'] / base['resume_s']:.2f} vs {label(sizes[0])} "
              f"(first task answered, Ray already up)")
        print(f"resume_state_load_{name}: {r['load_s']:.2f} s ratio={r['load_s'] / base['load_s']:.2f} vs "
              f"{label(sizes[0])} (the ResumeIndex actor's load, timed in the bench process)")
        print(f"time_to_first_task_{name}: {r['first_task_s']:.2f} s ratio={r['first_task_s'] / base['first_task_s']:.2f} "
              f"vs {label(sizes[0])} (with Ray start {r['ray_init_s']:.1f} s)")
        print(f"driver_peak_rss_{name}: {r['driver_peak_rss_bytes'] / 2**20:.0f} MiB "
              f"ratio={r['driver_peak_rss_bytes'] / base['driver_peak_rss_bytes']:.2f} vs {label(sizes[0])}", flush=True)


def bench_listing(sizes: list[int], endpoint: str) -> None:
    """Each size in its own prefix: the streamed listing (what a read task does) against the
    old one (fs.find into one driver list, what expand_sources did), with their peak Python
    memory; moto answers each page by scanning the whole bucket, so its time grows faster
    than the number of pages: only ratios within one size mean anything."""
    import tracemalloc

    import fsspec

    from datagen.video.sources import iter_source_pages
    from tests.s3_counting import counts, populate

    opts = {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    for n in sizes:
        populate(endpoint, f"list{n}", "v/", n)
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **opts)
        tracemalloc.start()
        t = time.perf_counter()
        old = len(fs.find(f"list{n}/v/"))
        old_s, old_peak = time.perf_counter() - t, tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        counts(endpoint, reset=True)
        t = time.perf_counter()
        listed = sum(len(p) for p in iter_source_pages(f"s3://list{n}/v/", opts))
        new_s, new_peak = time.perf_counter() - t, tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        pages = counts(endpoint)[f"list{n}"]["LIST"]
        assert listed == old == n, (listed, old)
        k = f"{n // 1000}k"
        print(f"list_{k}_s3_objects: {new_s:.2f} s ratio={new_s / old_s:.2f} vs fs.find into one list ({old_s:.2f} s)")
        print(f"list_{k}_requests: {pages} LIST ratio={pages / -(-n // 1000):.2f} vs one per 1000 keys")
        print(f"list_{k}_lister_peak_bytes: {new_peak / 2**20:.2f} MiB ratio={new_peak / old_peak:.3f} vs fs.find "
              f"({old_peak / 2**20:.1f} MiB)", flush=True)


def bench_s3_run(endpoint: str, work: Path) -> None:
    import boto3
    import yaml

    from datagen.config import to_dict
    from datagen.pipeline.config import load_config
    from datagen.pipeline.demo import BUNDLED_VIDEOS
    from schemas.tasks import TASKS
    from tests.s3_counting import counts

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="out")
    videos = sorted(p for p in BUNDLED_VIDEOS.iterdir() if p.suffix in (".avi", ".mp4"))
    for v in videos:
        s3.upload_file(str(v), "corpus", f"videos/{v.name}")
    video_bytes = sum(v.stat().st_size for v in videos)
    cfg = to_dict(load_config("cpu"))
    cfg["labels"] = ["edges"]  # storage is measured here: no model stage
    cfg["assemble"]["tasks"] = {t.name: 1.0 if t.name == "edge_detection" else 0.0 for t in TASKS}
    cfg["pairs"].update(short_side_px=128, max_long_side_px=256)
    cfg["write"]["min_rows_per_write"] = 20
    cfg["ray"]["num_cpus"] = 2
    (work / "s3.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_ENDPOINT_URL_S3": endpoint, "DATAGEN_FETCH_DIR": str(work / "fetch")}
    counts(endpoint, reset=True)
    res = subprocess.run([sys.executable, "-m", "datagen", "run", "--config", str(work / "s3.yaml"), "--input",
                          "s3://corpus/videos/", "--output", "s3://out/ds"], env=env, capture_output=True, text=True,
                         timeout=1800, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    served = counts(endpoint)
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket="out") for o in p.get("Contents", [])]
    shards = sum(k.endswith(".tar") for k in keys)
    vids, out = served["corpus"], served["out"]
    fetched = vids["bytes_out"] / video_bytes
    print(f"s3_bytes_fetched_per_video_byte: {fetched:.3f} ratio={fetched:.3f} vs the videos' bytes "
          f"({video_bytes / 1e6:.1f} MB, {len(videos)} videos, {vids.get('GET', 0)} GET)")
    print(f"s3_puts_per_shard: {out.get('PUT .tar', 0) / shards:.2f} PUT ratio={out.get('PUT .tar', 0) / shards:.2f} "
          f"vs one ({shards} shards; dataset bucket: {out.get('PUT', 0)} PUT, {out.get('POST', 0)} POST, "
          f"{out.get('COPY', 0)} COPY, {out.get('DELETE', 0)} DELETE, {out.get('HEAD', 0)} HEAD, {out.get('GET', 0)} GET, "
          f"{out.get('LIST', 0)} LIST for {len(keys)} objects)", flush=True)


def long_video_probe(minutes: float, window_s: float, work: str) -> dict:
    """In a fresh process: a synthetic low-resolution video of `minutes` (one-minute shots of pan,
    object and zoom at 4 fps, 128x72) through ingest, shots and pairs, one row at a time as the
    fused CPU stage gets them; its pairs' times and the process's peak RSS."""
    import resource

    from datagen.video.synthetic import Segment, write_video
    from schemas.columns import FAILED_STAGE, T_A_S, VIDEO_URI, batch_to_rows, rows_to_batch
    from stages.ingest import IngestConfig, IngestStage
    from stages.pairs import PairsStage
    from stages.shots import ShotsStage

    fps, path = 4, str(Path(work) / f"long_{minutes:g}.mp4")
    kinds = ("pan", "object", "zoom")
    write_video(path, [Segment(kinds[k % 3], 60 * fps, speed_px=4 if k % 3 == 2 else 1.5, seed=k)
                       for k in range(int(minutes))], width=128, height=72, fps=fps)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = batch_to_rows(IngestStage(IngestConfig(window_s=window_s))(rows_to_batch([{VIDEO_URI: path}])))
    times = []
    for row in rows:
        for p in batch_to_rows(PairsStage()(ShotsStage()(rows_to_batch([row])))):
            if p[FAILED_STAGE] is None:
                times.append(float(p[T_A_S]))
    return {"rows": len(rows), "times": sorted(times), "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_mib": rss0 / 1024, "duration_s": minutes * 60}


def bench_long_videos(work: Path) -> None:
    """Pairs and peak RSS of a 2-hour video against a 2-minute one, each in its own process."""
    def run(minutes: float, window_s: float) -> dict:
        out = subprocess.run([sys.executable, __file__, "--long-probe", f"{minutes},{window_s},{work}"],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        return json.loads(out.stdout.strip().splitlines()[-1])

    short = run(2, 180)
    for window_s, label in ((180, "default 3-minute windows"), (600, "10-minute windows, the old default")):
        long = run(120, window_s)
        t = long["times"]
        quarters = [sum(q * 1800 <= x < (q + 1) * 1800 for x in t) for q in range(4)]
        print(f"long_video_pairs/2h_{window_s:g}s: {len(t)} pairs ratio={len(t) / max(len(short['times']), 1):.2f} "
              f"vs 2min ({long['rows']} windows; pairs per half hour {quarters}; first {t[0]:.0f} s, last {t[-1]:.0f} s)")
        print(f"long_video_peak_rss/2h_{window_s:g}s: {long['rss_mib']:.0f} MiB ratio={long['rss_mib'] / short['rss_mib']:.2f} "
              f"vs 2min ({short['rss_mib']:.0f} MiB; {label})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="committed samples per resume directory")
    # 100k is the size; on this machine moto takes ~half an hour per 100k listing
    ap.add_argument("--list-objects", default="5000,20000", help="objects per listed prefix, comma list")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: resume,listing,s3run,long")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    ap.add_argument("--long-probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe)))
        return
    if args.long_probe:
        minutes, window_s, work = args.long_probe.split(",", 2)
        print(json.dumps(long_video_probe(float(minutes), float(window_s), work)))
        return
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        if "resume" not in skip:
            bench_resume([int(s) for s in args.sizes.split(",")], work)
        if "long" not in skip:
            bench_long_videos(work)
        if {"listing", "s3run"} - skip:
            from tests.conftest import free_port
            from tests.s3_counting import counting_s3_server

            with counting_s3_server(free_port()) as endpoint:
                import boto3

                s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                                  region_name="us-east-1")
                for bucket in ["corpus", *(f"list{n}" for n in args.list_objects.split(","))]:
                    s3.create_bucket(Bucket=bucket)
                if "listing" not in skip:
                    bench_listing([int(n) for n in args.list_objects.split(",")], endpoint)
                if "s3run" not in skip:
                    bench_s3_run(endpoint, work)


if __name__ == "__main__":
    main()
