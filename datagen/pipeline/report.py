"""What a run prints at the end: where the dataset is, per-stage yields, per-task counts."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from datagen.pipeline.run import RunSummary
from datagen.pipeline.throughput import add_throughput_table


def print_summary(summary: RunSummary, console: Console) -> None:
    st = summary.stats
    if st.get("smoke"):
        console.print("[bold yellow]SMOKE DATASET[/]: labels come from tiny random models, not real ones")
    y = Table(title="stage yields")
    for c in ("stage", "in", "out", "dropped by reason"):
        y.add_column(c)
    for stage, s in st["stages"].items():
        dropped = ", ".join(f"{r}={n}" for r, n in sorted(s.get("dropped", {}).items())) or "-"
        extra = f" ({s['pairs']} pairs)" if "pairs" in s else ""
        y.add_row(stage, str(s.get("in", "-")), f"{s.get('out', '-')}{extra}", dropped)
    console.print(y)
    t = Table(title="samples per task")
    t.add_column("task")
    t.add_column("samples", justify="right")
    for name, n in st["tasks"].items():
        t.add_row(name, str(n))
    console.print(t)
    add_throughput_table(st.get("throughput"), console)
    console.print(f"dataset: {summary.output}  ({st['samples']} samples, {st['failures']} failure rows, "
                  f"{summary.seconds:.0f} s{', resumed' if summary.resumed else ''})", highlight=False)
    console.print(f"check it: datagen validate {summary.output}   look at it: datagen preview {summary.output} "
                  f"--out preview.html", highlight=False)
