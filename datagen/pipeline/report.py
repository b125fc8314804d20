"""What a run prints at the end: the smoke mark, per-stage yields, per-task counts, where the
dataset is and the next commands. Borderless tables: a piped log stays short and greppable."""
from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table

from datagen.io.card import CARD_FILE, card_configs
from datagen.pipeline.outcome import outcome_lines
from datagen.pipeline.run import RunSummary
from datagen.pipeline.throughput import add_throughput_table


def print_summary(summary: RunSummary, console: Console) -> None:
    st = summary.stats
    if st.get("smoke"):
        console.print("[bold yellow]SMOKE DATASET[/]: labels come from tiny random models, not real ones")
    y = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
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
    tasks = " · ".join(f"{name} {n}" for name, n in st["tasks"].items()) or "none"
    console.print(f"samples per task: {tasks}", highlight=False)
    # pending and dropped pairs; the committed count is on the dataset line below. Older stats.json have none.
    for line in outcome_lines(st["outcome"])[1:] if "outcome" in st else []:
        console.print(line, highlight=False)
    if "cost" in st and st["cost"]["samples"]:
        c = st["cost"]
        console.print(f"cost per accepted sample: {c['cpu_s_per_sample']:.3f} CPU-s, {c['gpu_s_per_sample']:.3f} GPU-s busy, "
                      f"{c['gpu_s_reserved_per_sample']:.3f} GPU-s reserved ({c['samples']} samples this run)", highlight=False)
    for task, q in st.get("task_shares", {}).items():
        console.print(f"task share {task}: {q['share']:.1%} of target {q['target_share']:.1%} "
                      f"({q['written']} written, {q['dropped_over_share']} over share, shortfall {q['shortfall']})",
                      highlight=False)
    add_throughput_table(st.get("throughput"), console)
    out = summary.output
    console.print(f"dataset: {out}  ({st['samples']} samples, {st['failures']} failure rows, "
                  f"{summary.seconds:.0f} s{', resumed' if summary.resumed else ''})", highlight=False)
    first = next((c["config_name"] for c in card_configs(st["tasks"])), None)
    if first:
        console.print(f"card: {out}/{CARD_FILE}; load a task: datasets.load_dataset({out!r}, {first!r})",
                      highlight=False)
    console.print(f"next: datagen validate {out} · datagen preview {out} --out preview.html", highlight=False)
