"""Benchmark of the shot detectors on edited videos with known boundaries (datagen/video/evalset.py).

Per detector (builtin, transnetv2, and transnetv2 with the builtin's boundaries: the
pipeline's default for transnetv2) and per boundary kind: recall, and precision and F1 per
group (hard: cut, lookalike, jump, glitch; gradual: dissolve, fade, wipe). A cut counts when a
found boundary is within one frame of it, a gradual transition when a found boundary falls
inside its span (or on its first/last frame). Found boundaries that match nothing are false:
one-frame ones count against the hard group, wider ones against the gradual group.

Cost: CPU seconds per video second of each detector, the decode included (builtin: the scan
of reference frames and the detector; transnetv2: the scan of every frame at 48x27 and the
network on CPU, one thread each, the baseline). Pairs: how many pairs span a boundary, with
the per-video pair cap lifted. Agreement: builtin's cuts against transnetv2's on the real clips.

Run: PYTHONPATH=. python bench/shots.py [--videos 6] [--boundaries 18] [--tn-videos N]
(`--tn-videos`: how many evaluation videos transnetv2 runs on; it costs ~0.04 CPU-s a frame).
Every result line: `name: value unit ratio=R vs BASELINE`.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from datagen.video import evalset  # noqa: E402
from datagen.video.cuts import CutConfig, Shots, detect  # noqa: E402
from datagen.video.decode import ScanConfig, decode_window, scan  # noqa: E402
from datagen.video.pairing import PairingConfig, choose_pairs  # noqa: E402
from datagen.video.probe import probe  # noqa: E402
from datagen.video.transnet import TransNet, TransNetConfig, boundaries, with_builtin  # noqa: E402

BASELINE = "transnetv2_cpu"
ASSETS = Path(__file__).resolve().parents[1] / "datagen" / "assets" / "videos"
REAL = ("Megamind.avi", "box.mp4", "tree.avi")


def builtin(path: str) -> tuple[Shots, object, object, float]:
    info = probe(path)
    cfg = ScanConfig()
    t0 = time.process_time()
    seen = scan(path, info, cfg)
    shots = detect(seen.index, seen.thumbs, info.times_s, CutConfig(),
                   refine=lambda a, b: decode_window(path, info, cfg, a, b))
    return shots, seen, info, time.process_time() - t0


def transnet(path: str, net: TransNet, union: bool = False) -> tuple[Shots, object, object, float]:
    """The network alone, or (`union`) with the builtin detector's boundaries on the same scan, as the
    pipeline's default `shots.transnet.with_builtin` does (its cost: the builtin's detect, no decode)."""
    info = probe(path)
    t0 = time.process_time()
    seen = scan(path, info, ScanConfig(net_frames=True))
    p = net.probabilities(seen.net_frames)
    given = boundaries(p, net.cfg.threshold)
    if union:
        own = detect(seen.index, seen.thumbs, info.times_s, CutConfig())  # every frame decoded: nothing to refine
        given = with_builtin(given, own.cuts, own.transitions)
    shots = detect(seen.index, seen.thumbs, info.times_s, CutConfig(), given=given)
    return shots, seen, info, time.process_time() - t0


def score(videos, results) -> dict:
    per_kind: dict[str, list[int]] = {}
    false = {"hard": 0, "gradual": 0}
    for v, (shots, *_) in zip(videos, results):
        tally, unmatched = evalset.match(v.boundaries, evalset.found_boundaries(shots))
        for k, (hit, total) in tally.items():
            per_kind.setdefault(k, [0, 0])
            per_kind[k][0] += hit
            per_kind[k][1] += total
        for s in unmatched:
            false["hard" if s[0] == s[1] else "gradual"] += 1
    return {"kinds": per_kind, "false": false}


def spanning(videos, results) -> tuple[int, int]:
    cfg = PairingConfig(max_pairs_per_video=10**6)
    total = bad = 0
    for v, (shots, seen, info, _) in zip(videos, results):
        chosen, _ = choose_pairs(shots, seen.grid_index, seen.grid_images, info.times_s, cfg)
        pairs = [(p.frame_a, p.frame_b) for p in chosen]
        total += len(pairs)
        bad += evalset.spanning(v.boundaries, pairs)
    return total, bad


def report(name: str, s: dict) -> None:
    kinds = s["kinds"]
    for kind in evalset.CUT_KINDS + evalset.GRADUAL_KINDS:
        hit, total = kinds.get(kind, [0, 0])
        print(f"recall/{name}/{kind}: {hit / max(total, 1):.3f} recall ({hit}/{total}) ratio=1.00 vs truth")
    for group, members in (("hard", evalset.CUT_KINDS), ("gradual", evalset.GRADUAL_KINDS)):
        hit = sum(kinds.get(k, [0, 0])[0] for k in members)
        total = sum(kinds.get(k, [0, 0])[1] for k in members)
        r = hit / max(total, 1)
        p = hit / max(hit + s["false"][group], 1)
        f1 = 2 * p * r / max(p + r, 1e-9)
        print(f"prf/{name}/{group}: precision={p:.3f} recall={r:.3f} f1={f1:.3f} ({hit}/{total} found, "
              f"{s['false'][group]} false) ratio={f1:.2f} vs truth")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--boundaries", type=int, default=18)
    ap.add_argument("--tn-videos", type=int, default=None, help="evaluation videos transnetv2 runs on (default all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # CPU-seconds of one thread, like the builtin's one decoder thread
    with tempfile.TemporaryDirectory() as tmp:
        videos = evalset.build(Path(tmp), ASSETS, videos=args.videos, boundaries_per_video=args.boundaries)
        n_bound = sum(len(v.boundaries) for v in videos)
        print(f"evaluation_set: {n_bound} boundaries in {len(videos)} videos ratio=1.00 vs truth "
              f"({', '.join(f'{k}={sum(b.kind == k for v in videos for b in v.boundaries)}' for k in evalset.CUT_KINDS + evalset.GRADUAL_KINDS)})")
        net = TransNet(TransNetConfig(device="cpu"))
        tn_videos = videos[:args.tn_videos] if args.tn_videos else videos
        b_res = [builtin(v.path) for v in videos]
        t_res = [transnet(v.path, net) for v in tn_videos]
        u_res = [transnet(v.path, net, union=True) for v in tn_videos]
        video_s = [float(r[2].times_s[-1]) + 1 / r[2].fps for r in b_res]
        half = max(1, len(videos) // 2)
        b_rate = sum(r[3] for r in b_res) / sum(video_s)
        b_rate_half = sum(r[3] for r in b_res[:half]) / sum(video_s[:half])
        t_rate = sum(r[3] for r in t_res) / sum(video_s[:len(tn_videos)])
        print(f"cpu_s_per_video_s/builtin: {b_rate:.4f} cpu_s/video_s ratio={t_rate / b_rate:.1f} vs {BASELINE} "
              f"(cheaper by that factor; {sum(video_s):.0f} video-s)")
        print(f"cpu_s_per_video_s/builtin_half_set: {b_rate_half:.4f} cpu_s/video_s ratio={b_rate_half / b_rate:.2f} "
              f"vs builtin_full_set ({sum(video_s[:half]):.0f} vs {sum(video_s):.0f} video-s)")
        print(f"cpu_s_per_video_s/transnetv2_cpu: {t_rate:.4f} cpu_s/video_s ratio=1.00 vs {BASELINE} "
              f"({sum(video_s[:len(tn_videos)]):.0f} video-s)")
        report("builtin", score(videos, b_res))
        report("transnetv2", score(tn_videos, t_res))
        report("transnetv2_with_builtin", score(tn_videos, u_res))
        if len(tn_videos) < len(videos):
            report("builtin_on_transnetv2_videos", score(tn_videos, b_res[:len(tn_videos)]))
        for name, vids, res in (("builtin", videos, b_res), ("transnetv2", tn_videos, t_res),
                                ("transnetv2_with_builtin", tn_videos, u_res)):
            total, bad = spanning(vids, res)
            print(f"spanning_pairs/{name}: {bad} pairs ratio={bad / max(total, 1):.3f} vs all_pairs "
                  f"({total} pairs, per-video cap lifted)")
        off = dataclasses.replace(PairingConfig().continuity, max_step_warp_error=1.0, max_frame_change=10.0,
                                  spike_min_change=10.0)
        cfg = PairingConfig(max_pairs_per_video=10**6, continuity=off)
        for name, vids, res in (("builtin", videos, b_res), ("transnetv2", tn_videos, t_res)):
            total = bad = 0
            for v, (shots, seen, info, _) in zip(vids, res):
                chosen, _ = choose_pairs(shots, seen.grid_index, seen.grid_images, info.times_s, cfg)
                total += len(chosen)
                bad += evalset.spanning(v.boundaries, [(p.frame_a, p.frame_b) for p in chosen])
            print(f"spanning_pairs_without_continuity_check/{name}: {bad} pairs ratio={bad / max(total, 1):.3f} "
                  f"vs all_pairs ({total} pairs)")
    agree = union = 0
    for name in REAL:
        b_cuts = builtin(str(ASSETS / name))[0].cuts
        t_cuts = transnet(str(ASSETS / name), net)[0].cuts
        same = sum(any(abs(b - t) <= 1 for t in t_cuts) for b in b_cuts)
        both = len(b_cuts) + len(t_cuts) - same
        agree, union = agree + same, union + both
        print(f"agreement/{name}: {same} common cuts ratio={same / both if both else 1.0:.2f} vs union_of_cuts "
              f"(builtin {b_cuts}, transnetv2 {t_cuts})")
    print(f"agreement/real_clips: {agree} common cuts ratio={agree / union if union else 1.0:.2f} vs union_of_cuts")

if __name__ == "__main__":
    main()
