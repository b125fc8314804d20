"""What `datagen run` prints while it works, and how a user's error reaches them.

Ray, Ray Data and Hugging Face each print their own progress (operator by operator,
every weight file, every worker's output): hundreds of lines for a one-minute run. By
default they are quiet and the run reports its own progress from what it has committed
to the output (so the figures are what a resume would find): a bar on a terminal, one
line every few seconds elsewhere. `--verbose` gives all of theirs back.

A `UserError` raised inside a Ray task or actor reaches the driver wrapped by Ray (and
by Ray Data) with the worker's traceback in its text; `user_error_message` digs the
user's one line back out.
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pyarrow.parquet as pq

from datagen import UserError
from datagen.io.shards import FAILURES_DIR, MANIFEST_DIR
from datagen.io.storage import Location
from datagen.pipeline.progress import PROGRESS_DIR

LINE_EVERY_S = 10.0  # off a terminal: a line this often when the output grew (~6 lines a minute at most)
HEARTBEAT_S = 60.0  # ... and at least this often when it did not, to show the run is alive
BAR_REFRESH_S = 1.0  # on a terminal the bar redraws in place, so it may update often
# How a UserError reads inside the text of a Ray error that lost the exception object
# (an actor that died in its constructor keeps only the formatted traceback).
_REMOTE_USER_ERROR = re.compile(r"^datagen\.UserError: (.+)$", re.MULTILINE)


def quiet_third_party_output(verbose: bool) -> None:
    """Before `ray.init`: silence Ray Data's and Hugging Face's progress and chatter (Ray's own
    driver log level is `ray.init`'s argument, see `init_ray`).

    Ray's workers inherit this process's environment, so the Hugging Face switch reaches
    the actors that load models too.
    """
    if verbose:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" bars, per actor
    try:
        import transformers

        transformers.utils.logging.disable_progress_bar()  # already imported here: the env var came too late
    except ImportError:
        pass
    import ray.data
    from ray.data._internal.logging import SessionFileHandler

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the operator-by-operator lines; our own progress replaces them
    ctx.enable_operator_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:  # the file handler keeps everything
        if not isinstance(handler, SessionFileHandler) and _quiet_ray_data not in handler.filters:
            handler.addFilter(_quiet_ray_data)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.data")  # tuning hints
    # map_batches takes max_restarts only through its ray_remote_args, which Ray 2.60 deprecates
    # without a named replacement yet: a notice for us (the constraints files pin Ray), not for the user
    warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
    _drop_pushed_user_error_tracebacks()


def _drop_pushed_user_error_tracebacks() -> None:
    """The raylet pushes "task failed, will be retried" with the worker's traceback to the
    driver, which prints it whatever `log_to_driver` says. When that traceback is a
    UserError's, the run raises the same error and the CLI prints it as one line, so the
    pushed copy is dropped; every other pushed message still prints."""
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "drops_user_errors", False):
        return

    def print_unless_user_error(data, ignore_prefix: bool):
        if not any("datagen.UserError" in str(line) for line in data.get("lines", ())):
            original(data, ignore_prefix=ignore_prefix)

    print_unless_user_error.drops_user_errors = True
    ray_worker.print_to_stdstream = print_unless_user_error


def _quiet_ray_data(record: logging.LogRecord) -> bool:
    """Warnings stay; info goes; errors go too: each describes the exception the run then
    raises, which the CLI prints itself (one line for a user error, else the traceback)."""
    return record.levelno == logging.WARNING and not record.getMessage().startswith("Progress bars")


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of a UserError anywhere in `exc`, however Ray wrapped it."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        # Ray's RayTaskError subclasses the cause's class, so a wrapped error passes
        # isinstance; only a plain UserError carries the user's text alone in args[0].
        if isinstance(e, UserError) and type(e).__module__.startswith("datagen") and e.args:
            return str(e.args[0])
        todo += [c for c in (e.__cause__, e.__context__, getattr(e, "cause", None)) if isinstance(c, BaseException)]
    found = _REMOTE_USER_ERROR.findall(str(exc))
    return found[-1].strip() if found else None


@dataclass
class Committed:
    """What the output holds so far, counted from its tables (parts are read once each).

    A video is counted by its file: a long video's windows (ids of their own) are one
    video, done when every window of it seen so far has all its pairs committed or
    failed as a whole. Ingest emits a file's windows together, so a window not seen yet
    is rare while its neighbours finish; the count is exact once the run ends."""

    samples: int = 0
    failures: int = 0
    pairs_done: int = 0
    pairs_per_unit: dict[str, int] = field(default_factory=dict)  # video or window id -> its pairs
    pairs_done_per_unit: dict[str, int] = field(default_factory=dict)
    failed_units: set[str] = field(default_factory=set)  # video or window ids that failed as a whole
    units_of_video: dict[str, set[str]] = field(default_factory=dict)  # video URI -> its video or window ids
    _seen: set[str] = field(default_factory=set)

    @property
    def videos_done(self) -> int:
        def unit_done(u: str) -> bool:
            return u in self.failed_units or (u in self.pairs_per_unit
                                              and self.pairs_done_per_unit.get(u, 0) >= self.pairs_per_unit[u])
        return sum(1 for units in self.units_of_video.values() if all(unit_done(u) for u in units))

    @property
    def videos_failed(self) -> int:
        return sum(1 for units in self.units_of_video.values() if units and units <= self.failed_units)

    def update(self, loc: Location) -> None:
        for rel in loc.glob(f"{MANIFEST_DIR}/*.parquet"):
            if self._first_time(rel):
                self.samples += _rows(loc, rel)
        for rel in loc.glob(f"{FAILURES_DIR}/*.parquet"):
            if self._first_time(rel):
                self.failures += _rows(loc, rel)
        for rel in loc.glob(f"{PROGRESS_DIR}/*.parquet"):
            if not self._first_time(rel):
                continue
            with loc.fs.open(loc.path(rel), "rb") as f:
                t = pq.read_table(f, columns=["pair_key", "video_id", "video_uri", "pairs_in_video"]).to_pydict()
            for key, vid, uri, n in zip(t["pair_key"], t["video_id"], t["video_uri"], t["pairs_in_video"]):
                unit = vid or uri  # a video that failed before it had an id is known by its URI
                self.units_of_video.setdefault(uri or unit, set()).add(unit)
                if key is None:
                    self.failed_units.add(unit)
                    continue
                self.pairs_done += 1
                self.pairs_done_per_unit[unit] = self.pairs_done_per_unit.get(unit, 0) + 1
                if n is not None:
                    self.pairs_per_unit[unit] = n

    def _first_time(self, rel: str) -> bool:
        if rel in self._seen:
            return False
        self._seen.add(rel)
        return True


def _rows(loc: Location, rel: str) -> int:
    with loc.fs.open(loc.path(rel), "rb") as f:
        return pq.read_metadata(f).num_rows


def progress_line(c: Committed, videos: int, elapsed_s: float, samples_at_start: int) -> str:
    rate = (c.samples - samples_at_start) / elapsed_s if elapsed_s > 0 else 0.0
    return (f"[{elapsed_s:5.0f} s] videos {c.videos_done}/{videos} · pairs {c.pairs_done} · "
            f"samples {c.samples} ({rate:.1f}/s) · failures {c.failures}")


@contextmanager
def report_progress(loc: Location, videos: Callable[[], int], say: Callable[[str], None] | None, *,
                    tty: bool | None = None, every_s: float | None = None, heartbeat_s: float = HEARTBEAT_S) -> Iterator[Committed]:
    """While the body runs, report what the output holds: a bar on a terminal, else a line
    every `every_s` seconds when something changed (every `heartbeat_s` when nothing did)
    and a last one at the end. `videos()` is how many videos are listed so far: sources
    stream, so the total grows while the run goes."""
    if say is None:  # a caller without a console (the API, tests) wants no report
        yield Committed()
        return
    tty = sys.stderr.isatty() if tty is None else tty
    every_s = every_s if every_s is not None else (BAR_REFRESH_S if tty else LINE_EVERY_S)
    counts = Committed()
    counts.update(loc)
    start_samples, t0 = counts.samples, time.monotonic()
    stop = threading.Event()
    bar = _Bar() if tty else None

    def state() -> tuple[int, ...]:
        return counts.samples, counts.pairs_done, counts.videos_done, counts.failures

    last = {"said": state(), "at": t0}  # what a resumed run starts from is not news

    def tick(final: bool = False) -> None:
        counts.update(loc)
        now = time.monotonic()
        listed = videos()
        line = progress_line(counts, listed, now - t0, start_samples)
        if bar:
            bar.show(counts.videos_done, listed, line)
            return
        if final or state() != last["said"] or now - last["at"] >= heartbeat_s:
            say(line)
            last.update(said=state(), at=now)

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                tick()
            except OSError:  # storage hiccup: the next tick reads again; the run itself is not affected
                pass

    thread = threading.Thread(target=loop, name="datagen-progress", daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join()
        if bar:
            bar.close()
        else:
            tick(final=True)


class _Bar:
    """A rich progress bar over videos, its description the progress line."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self.progress = Progress(BarColumn(), TextColumn("{task.description}"), console=Console(stderr=True),
                                 transient=True)
        self.task = self.progress.add_task("starting", total=1)
        self.progress.start()

    def show(self, done: int, listed: int, line: str) -> None:
        self.progress.update(self.task, completed=done, total=max(listed, 1), description=line)

    def close(self) -> None:
        self.progress.stop()
