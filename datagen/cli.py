"""The `datagen` command line. Each command is a thin shell over a module that does the work."""
from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn raw videos into training data for image generation/editing, and train on it.")
console = Console(stderr=True, soft_wrap=True)  # soft wrap: a piped log keeps one line per message


def user_errors(fn: Callable) -> Callable:
    """Errors a user can fix print as one line naming the thing and the fix, exit 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from datagen.pipeline.progress_log import user_error_message

        try:
            return fn(*args, **kwargs)
        except Exception as e:  # a UserError may arrive wrapped by Ray (raised in a task or an actor)
            message = user_error_message(e)
            if message is None:
                raise
            console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, even in a log
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
    from datagen.pipeline.outcome import outcome_lines, run_outcome, standing_failures

    loc = Location.dataset(dataset)
    saved = read_stats(loc) or {}
    fresh = compute_stats(loc, saved.get("stages"), {k: v for k, v in saved.items() if k in ("smoke", "cost")},
                          failures=standing_failures(loc))
    outcome = run_outcome(loc)
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
    for c in ("stage", "in", "out", "survival", "dropped (by reason)"):
        s.add_column(c)
    for stage, st in fresh["stages"].items():
        dropped = ", ".join(f"{r}={n}" for r, n in sorted(st.get("dropped", {}).items())) or "-"
        survival = st.get("survival", st.get("pairs_survival"))
        s.add_row(stage, str(st.get("in", "-")), str(st.get("out", "-")),
                  f"{survival:.0%}" if survival is not None else "-", dropped)
    out.print(s)
    for line in outcome_lines(outcome):
        out.print(line, highlight=False)
    cost = fresh.get("cost") or {}
    if cost.get("samples"):
        out.print(f"last run: {cost['cpu_s_per_sample']:.3f} CPU-s and {cost['gpu_s_per_sample']:.3f} GPU-s "
                  f"(busy) per accepted sample, {cost['samples']} samples", highlight=False)


@app.command()
@user_errors
def compact(dataset: str = typer.Argument(..., help="dataset directory or URL")):
    """Merge the small manifest, failures and progress parts into few large ones (also run at the end of a run)."""
    from datagen.io.compact import compact_dataset
    from datagen.io.storage import Location

    loc = Location.dataset(dataset)
    for r in compact_dataset(loc):
        console.print(f"{r.folder}: {r.parts_before} -> {r.parts_after} parts", highlight=False)


@app.command()
@user_errors
def run(
    config: Optional[Path] = typer.Option(None, help="YAML config (see datagen/profiles/)"),
    input: List[str] = typer.Option(..., "--input", "-i", help="videos: dir, glob, list file, s3://prefix"),
    output: str = typer.Option(..., "--output", "-o", help="dataset directory or URL"),
    set_: List[str] = typer.Option([], "--set", help="override a config key, e.g. pairs.max_pairs_per_shot=4"),
    retry_failed: List[str] = typer.Option([], "--retry-failed", help="re-open pairs dropped for this permanent "
                                           "reason (repeatable); transient failures are always retried"),
    verbose: bool = typer.Option(False, "--verbose", help="also print Ray Data's progress and the workers' output"),
):
    """Run the pipeline: videos -> pairs -> labels -> task samples -> shards."""
    from datagen.pipeline.config import load_config
    from datagen.pipeline.report import print_summary
    from datagen.pipeline.run import run_pipeline

    cfg = load_config(config, set_)
    try:
        summary = run_pipeline(cfg, input, output, console=console, retry_failed=retry_failed,
                               verbose=verbose)
    except KeyboardInterrupt:
        console.print(f"interrupted: what {output} committed stays; run the same command again to resume",
                      highlight=False)
        raise typer.Exit(130) from None
    print_summary(summary, Console(soft_wrap=True))


@app.command()
@user_errors
def demo(
    output: str = typer.Option("demo_out", "--output", "-o", help="dataset directory"),
    input: List[str] = typer.Option([], "--input", "-i", help="videos (default: the bundled sample clips)"),
    verbose: bool = typer.Option(False, "--verbose", help="also print Ray Data's progress and the workers' output"),
):
    """Run the whole pipeline on the bundled sample videos with the CPU profile."""
    from datagen.pipeline.demo import demo_config, demo_inputs
    from datagen.pipeline.progress_log import quiet_third_party_output
    from datagen.pipeline.report import print_summary
    from datagen.pipeline.run import run_pipeline

    quiet_third_party_output(verbose)  # before the tiny models are built: they print their own bars
    cfg = demo_config(say=lambda line: console.print(line, highlight=False))
    summary = run_pipeline(cfg, demo_inputs(input), output, console=console, verbose=verbose)
    print_summary(summary, Console(soft_wrap=True))


@app.command()
@user_errors
def relabel(
    input: str = typer.Option(..., "--input", help="existing dataset (a datagen run or relabel output)"),
    output: str = typer.Option(..., "--output", help="new dataset version"),
    stages: str = typer.Option(..., "--stages", help="comma list of labels to re-run: caption,segment,depth,edges"),
    config: Optional[Path] = typer.Option(None, help="YAML laid over the dataset's own config.yaml (e.g. new models)"),
    set_: List[str] = typer.Option([], "--set", help="override a config key, e.g. depth.model=PATH"),
    only_stale: bool = typer.Option(False, "--only-stale", help="re-run only labels whose provenance differs"),
):
    """Re-run labelling stages (and what depends on them) on a dataset's pair store into a new version."""
    from datagen.pipeline.relabel import dataset_config, relabel as run_relabel
    from datagen.pipeline.report import print_summary

    cfg = dataset_config(input, config, set_)
    names = [s.strip() for s in stages.split(",") if s.strip()]
    summary = run_relabel(input, output, names, cfg, only_stale, console=console)
    print_summary(summary, Console())  # the stage-yield and failure tables of `datagen run`
    changed = ", ".join(f"{k}={v}" for k, v in summary.samples_changed.items()) or "none"
    keys = ", ".join(f"{n} {k}" for k, n in summary.changes.items())
    console.print(f"relabelled {summary.pairs} pairs: labels re-run in {changed} samples; keys {keys}; "
                  f"rebuilt {', '.join(summary.tasks_rebuilt)}; {summary.shards_copied} shards copied byte for byte",
                  highlight=False)


@app.command()
@user_errors
def preview(
    dataset: str = typer.Argument(...),
    out: Path = typer.Option(..., "--out", help="HTML file to write"),
    task: Optional[str] = typer.Option(None, help="only this task (id or name)"),
    per_task: int = typer.Option(24, "--per-task", help="samples shown per task, spread over the task"),
):
    """Write an HTML page: a grid of samples per task (thumbnails link to full images), failures by reason,
    and the pairs the judge rejected with its verdicts."""
    from datagen.preview import write_preview

    summary = write_preview(dataset, out, task=task, per_task=per_task)
    for note in summary.read_errors:
        console.print(f"[bold yellow]warning:[/] {note}", highlight=False)
    smoke = " (SMOKE dataset: tiny random models)" if summary.smoke else ""
    console.print(f"wrote {summary.path} (full images in {summary.files_dir}/): {sum(summary.shown.values())} of "
                  f"{summary.samples_in_dataset} samples, {summary.failures} failure rows, "
                  f"{summary.rejected_shown} of {summary.rejected} rejected pairs{smoke}", highlight=False)


@app.command()
@user_errors
def train(
    config: Path = typer.Option(..., help="trainer YAML config, or a profile name (train_cpu, train_gpu)"),
    resume: bool = typer.Option(False, help="resume from the latest checkpoint of the run"),
    set_: List[str] = typer.Option([], "--set", help="override a config key"),
):
    """Train the factorized diffusion transformer on datagen shards (use torchrun for many GPUs)."""
    from datagen.train.train import run as run_training

    run_training(_train_config(config, set_), resume=resume)


def _train_config(config: Path, set_: List[str]):
    from datagen.config import apply_overrides, from_dict, load_yaml
    from datagen.train.train import TrainConfig

    profile = Path(__file__).resolve().parent / "profiles" / f"{config}.yaml"  # `--config train_cpu`
    return from_dict(TrainConfig, apply_overrides(load_yaml(profile if not config.exists() and profile.is_file()
                                                            else config), set_))


@app.command()
@user_errors
def encode(
    dataset: str = typer.Argument(..., help="dataset directory or URL (the --output of datagen run/demo)"),
    out: str = typer.Option(..., "--out", help="sidecar directory to write, e.g. DATASET_latents"),
    config: Path = typer.Option(..., help="the training config (or profile) whose encoders and buckets to use"),
    set_: List[str] = typer.Option([], "--set", help="override a config key"),
    batch_size: int = typer.Option(32, "--batch-size", help="samples per encoder call"),
):
    """Pre-encode a dataset with the trainer's frozen encoders (VAE latents, T5 states) into sidecar shards;
    train on them with data.latents. Rerun the same command to resume."""
    from rich.progress import Progress

    from datagen.train.encode import encode_dataset

    cfg = _train_config(config, set_)
    if cfg.model.tiny_encoders:  # a smoke profile (train_cpu): the encoders its training run would build
        from datagen.train.tiny import ensure_tiny_encoders

        for path in ensure_tiny_encoders(cfg.model.text_encoder, cfg.model.vae):
            console.print(f"built tiny random encoders at {path} (model.tiny_encoders)", highlight=False)
    with Progress(console=console, transient=True) as bar:
        job = bar.add_task("encoding shards", total=None)
        summary = encode_dataset(dataset, out, cfg.model.text_encoder, cfg.model.vae, cfg.data, cfg.precision,
                                 cfg.device, batch_size,
                                 progress=lambda done, total: bar.update(job, completed=done, total=total))
    dropped = f", {summary.samples_dropped} undecodable samples left out" if summary.samples_dropped else ""
    console.print(f"{out}: encoded {summary.shards_encoded} shards ({summary.samples} samples), "
                  f"{summary.shards_skipped} already done{dropped}; train with data.latents: [{out}]", highlight=False,
                  markup=False)


@app.command()
@user_errors
def sample(
    checkpoint: Path = typer.Option(...),
    task: str = typer.Option("text_to_image", help="task id or name (with --chain: the first link)"),
    prompt: str = typer.Option(...),
    image: List[str] = typer.Option([], help="ROLE=PATH, in order"),
    out: Path = typer.Option(..., help="output directory"),
    chain: List[str] = typer.Option([], help="TASK=PROMPT: sample again with the previous image as the canvas "
                                             "(e.g. instruction_edit='make it night'); repeatable"),
):
    """Sample images from a trained checkpoint with the Euler ODE sampler; --chain factorizes (Emu Video)."""
    from datagen.train.sample import chain_cli, sample_cli

    if chain:
        paths = chain_cli(checkpoint, prompt, chain, out, images=image, task=task)
        console.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False)
        return
    path = sample_cli(checkpoint, task, prompt, image, out)
    console.print(f"wrote {path}", highlight=False)


def main() -> None:  # pragma: no cover - `python -m datagen`
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
