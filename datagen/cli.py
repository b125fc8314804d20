"""The `datagen` command line. Each command is a thin shell over a module that does the work."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from datagen import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn raw videos into training data for image generation/editing, and train on it.")
console = Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    """Errors a user can fix print as one line naming the thing and the fix, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)  # one line, even in a log
            raise typer.Exit(2) from None

    return wrapper


def not_built(command: str) -> None:
    console.print(f"datagen {command}: not built yet")
    raise typer.Exit(2)


@app.command()
@user_errors
def validate(dataset: str = typer.Argument(..., help="dataset directory or URL (e.g. s3://bucket/prefix)")):
    """Check every shard, sample and manifest row of a dataset; exit 1 on any problem."""
    from rich.progress import Progress

    from datagen.io.validate import validate as run_validate

    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("validating shards", total=None)
        report = run_validate(dataset, progress=lambda done, total: bar.update(job, completed=done, total=total))
    for line in report.problems:
        print(line)
    verdict = "valid" if report.ok else f"INVALID: {len(report.problems)} problem(s)"
    console.print(f"{dataset}: {report.shards} shards, {report.samples} samples: {verdict}", highlight=False)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
@user_errors
def stats(dataset: str = typer.Argument(..., help="dataset directory or URL")):
    """Print samples per task and, per stage, rows in/out and drops by reason."""
    from datagen.io.storage import Location
    from datagen.io.tables import compute_stats, read_stats

    loc = Location.parse(dataset)
    if not loc.exists(""):
        raise UserError(f"dataset {dataset!r} not found; pass the --output directory of a run")
    saved = read_stats(loc) or {}
    fresh = compute_stats(loc, saved.get("stages"), {k: v for k, v in saved.items() if k == "smoke"})
    out = Console()
    if fresh.get("smoke"):
        out.print("[bold yellow]SMOKE DATASET[/]: labels come from tiny random models, not real ones")
    t = Table(title=f"{dataset}: {fresh['samples']} samples, {fresh['bytes'] / 1e6:.1f} MB")
    t.add_column("task")
    t.add_column("samples", justify="right")
    for name, n in fresh["tasks"].items():
        t.add_row(name, str(n))
    out.print(t)
    s = Table(title=f"stages ({fresh['failures']} failure rows)")
    for c in ("stage", "in", "out", "dropped (by reason)"):
        s.add_column(c)
    for stage, st in fresh["stages"].items():
        dropped = ", ".join(f"{r}={n}" for r, n in sorted(st.get("dropped", {}).items())) or "-"
        s.add_row(stage, str(st.get("in", "-")), str(st.get("out", "-")), dropped)
    out.print(s)


@app.command()
@user_errors
def run(
    config: Optional[Path] = typer.Option(None, help="YAML config (see datagen/profiles/)"),
    input: List[str] = typer.Option(..., "--input", "-i", help="videos: dir, glob, list file, s3://prefix"),
    output: str = typer.Option(..., "--output", "-o", help="dataset directory or URL"),
    set_: List[str] = typer.Option([], "--set", help="override a config key, e.g. pairs.max_pairs_per_shot=4"),
):
    """Run the pipeline: videos -> pairs -> labels -> task samples -> shards."""
    from datagen.pipeline.config import load_config
    from datagen.pipeline.report import print_summary
    from datagen.pipeline.run import run_pipeline

    cfg = load_config(config, set_)
    summary = run_pipeline(cfg, input, output, console=console)
    print_summary(summary, Console())


@app.command()
@user_errors
def demo(
    output: str = typer.Option("demo_out", "--output", "-o", help="dataset directory"),
    input: List[str] = typer.Option([], "--input", "-i", help="videos (default: the bundled sample clips)"),
):
    """Run the whole pipeline on the bundled sample videos with the CPU profile."""
    from datagen.pipeline.demo import demo_config, demo_inputs
    from datagen.pipeline.report import print_summary
    from datagen.pipeline.run import run_pipeline

    cfg = demo_config(say=lambda line: console.print(line, highlight=False))
    summary = run_pipeline(cfg, demo_inputs(input), output, console=console)
    print_summary(summary, Console())


@app.command()
@user_errors
def relabel(
    input: str = typer.Option(..., "--input", help="existing dataset"),
    output: str = typer.Option(..., "--output", help="new dataset version"),
    stages: str = typer.Option(..., "--stages", help="comma list: depth,edges,caption,segment"),
    config: Optional[Path] = typer.Option(None, help="YAML config with the new models"),
    only_stale: bool = typer.Option(False, "--only-stale", help="touch only samples whose provenance differs"),
):
    """Re-run some labelling stages on an existing dataset into a new version."""
    from rich.progress import Progress

    from datagen.pipeline.config import load_config
    from datagen.pipeline.relabel import relabel as run_relabel

    cfg = load_config(config)
    names = [s.strip() for s in stages.split(",") if s.strip()]
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("relabelling shards", total=None)
        summary = run_relabel(input, output, names, cfg, only_stale,
                              progress=lambda done, total: bar.update(job, completed=done, total=total))
    changed = ", ".join(f"{k}={v}" for k, v in summary.samples_changed.items()) or "none"
    console.print(f"relabelled {summary.shards_relabelled} shards (labels changed: {changed}; "
                  f"{summary.samples_copied} samples copied unchanged), copied {summary.shards_copied} shards "
                  f"byte for byte, {summary.shards_skipped_done} already done, {summary.failures} failures", highlight=False)
    console.print(f"dataset: {summary.output}", highlight=False)


@app.command()
@user_errors
def preview(
    dataset: str = typer.Argument(...),
    out: Path = typer.Option(..., "--out", help="HTML file to write"),
    task: Optional[str] = typer.Option(None, help="only this task (id or name)"),
    limit: int = typer.Option(24, help="samples per task"),
):
    """Write a self-contained HTML page of samples, prompts, labels and failures."""
    from datagen.preview import write_preview

    summary = write_preview(dataset, out, task=task, limit=limit)
    for note in summary.read_errors:
        console.print(f"[bold yellow]warning:[/] {note}", highlight=False)
    smoke = " (SMOKE dataset: tiny random models)" if summary.smoke else ""
    console.print(f"wrote {summary.path}: {sum(summary.shown.values())} of {summary.samples_in_dataset} samples, "
                  f"{summary.failures} failure rows{smoke}", highlight=False)


@app.command()
@user_errors
def train(
    config: Path = typer.Option(..., help="trainer YAML config"),
    resume: bool = typer.Option(False, help="resume from the latest checkpoint of the run"),
    set_: List[str] = typer.Option([], "--set", help="override a config key"),
):
    """Train the factorized diffusion transformer on datagen shards (use torchrun for many GPUs)."""
    from datagen.config import apply_overrides, from_dict, load_yaml
    from datagen.train.train import TrainConfig, run as run_training

    cfg = from_dict(TrainConfig, apply_overrides(load_yaml(config), set_))
    run_training(cfg, resume=resume)


@app.command()
@user_errors
def sample(
    checkpoint: Path = typer.Option(...),
    task: str = typer.Option(..., help="task id or name"),
    prompt: str = typer.Option(...),
    image: List[str] = typer.Option([], help="ROLE=PATH, in order"),
    out: Path = typer.Option(..., help="output directory"),
):
    """Sample images from a trained checkpoint with the Euler ODE sampler."""
    from datagen.train.sample import sample_cli

    path = sample_cli(checkpoint, task, prompt, image, out)
    console.print(f"wrote {path}", highlight=False)


def main() -> None:  # pragma: no cover - `python -m datagen`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
