"""`datagen preview` cost as the dataset grows: page bytes and seconds at 1,000 and 10,000
samples (default --per-task 24), each against the 1,000-sample run in the same process.

Prints `name: value unit ratio=R vs BASELINE` lines. A page that grew with the dataset
would show ratio ~10; a bounded one ~1.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datagen.io.synthetic import write_many_samples  # noqa: E402
from datagen.preview import write_preview  # noqa: E402

SIZES = (1_000, 10_000)


def measure(root: Path, samples: int) -> tuple[float, float]:
    data = root / f"ds{samples}"
    write_many_samples(str(data), samples)
    out = root / f"p{samples}.html"
    best_s = float("inf")
    for _ in range(3):  # best of three: the machine is shared
        t0 = time.perf_counter()
        write_preview(str(data), out)
        best_s = min(best_s, time.perf_counter() - t0)
    return out.stat().st_size / 1e6, best_s


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-preview-") as tmp:
        results = {n: measure(Path(tmp), n) for n in SIZES}
    base_mb, base_s = results[SIZES[0]]
    for n, (mb, s) in results.items():
        print(f"preview_page_{n}_samples: {mb:.2f} MB ratio={mb / base_mb:.2f} vs {SIZES[0]} samples")
        print(f"preview_seconds_{n}_samples: {s:.2f} s ratio={s / base_s:.2f} vs {SIZES[0]} samples")


if __name__ == "__main__":
    main()
