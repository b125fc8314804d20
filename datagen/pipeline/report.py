"""What a run prints at the end: where the dataset is, per-stage yields, per-task counts."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from datagen.pipeline.run import RunSummary


def print_summary(summary: RunSummary, console: Console) -> None:
    st = summary.stats
    if st.get("smoke"):
        console.print("[bold yellow]SMOKE DATASET[/]: labels come from tiny random models, not real ones")
    y = Table(title="stage yields")
    cost = st.get("cost", {}).get("stages", {})
    for c in ("stage", "in", "out", "survival", "dropped by reason", "CPU-s", "GPU-s"):
        y.add_column(c)
    for stage, s in st["stages"].items():
        dropped = ", ".join(f"{r}={n}" for r, n in sorted(s.get("dropped", {}).items())) or "-"
        extra = f" ({s['pairs']} pairs)" if "pairs" in s else ""
        survival = s.get("survival", s.get("pairs_survival"))
        spent = [cost[n] for n in stage.split("+") if n in cost]  # ingest+shots+pairs is one row
        y.add_row(stage, str(s.get("in", "-")), f"{s.get('out', '-')}{extra}",
                  f"{survival:.0%}" if survival is not None else "-", dropped,
                  f"{sum(c['cpu_s'] for c in spent):.1f}" if spent else "-",
                  f"{sum(c['gpu_s'] for c in spent):.1f}" if spent else "-")
    console.print(y)
    if "cost" in st and st["cost"]["samples"]:
        c = st["cost"]
        console.print(f"cost per accepted sample: {c['cpu_s_per_sample']:.3f} CPU-s, {c['gpu_s_per_sample']:.3f} GPU-s busy, "
                      f"{c['gpu_s_reserved_per_sample']:.3f} GPU-s reserved ({c['samples']} samples this run)", highlight=False)
    for task, q in st.get("task_shares", {}).items():
        console.print(f"task share {task}: {q['share']:.1%} of target {q['target_share']:.1%} "
                      f"({q['written']} written, {q['dropped_over_share']} over share, shortfall {q['shortfall']})",
                      highlight=False)
    t = Table(title="samples per task")
    t.add_column("task")
    t.add_column("samples", justify="right")
    for name, n in st["tasks"].items():
        t.add_row(name, str(n))
    console.print(t)
    console.print(f"dataset: {summary.output}  ({st['samples']} samples, {st['failures']} failure rows, "
                  f"{summary.seconds:.0f} s{', resumed' if summary.resumed else ''})", highlight=False)
    console.print(f"check it: datagen validate {summary.output}   look at it: datagen preview {summary.output} "
                  f"--out preview.html", highlight=False)
