"""What a run prints: progress counted from the committed tables, and a UserError raised in a
Ray task or actor found again as its one line."""
from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from datagen import UserError
from datagen.io.shards import DatasetWriter
from datagen.io.storage import Location
from datagen.io.synthetic import make_sample
from datagen.pipeline.commit import write_commit_record
from datagen.pipeline.progress_log import Committed, report_progress, user_error_message
from tests.pipeline.conftest import REAL_VIDEOS

MESSAGE = "config depth.model: cannot load '/nope'; set depth.model to a local directory"


def commit(root, video: str, pairs: int, of: int) -> None:
    with DatasetWriter(str(root), prefix=f"{video}-") as w:
        for p in range(pairs):
            w.add(make_sample(1, video_id=video, pair=p))
        w.add_failure(input_uri=f"file:///{video}.mp4", video_id=video, stage="caption", reason="invalid_json",
                      detail="")
    write_commit_record(Location.parse(str(root)), f"{video}-", [
        {"pair_key": f"{video}/0/{p}", "video_id": video, "video_uri": f"file:///{video}.mp4", "pairs_in_video": of}
        for p in range(pairs)])


def test_committed_counts_each_table_part_once_and_videos_when_all_their_pairs_are_done(tmp_path):
    loc = Location.parse(str(tmp_path))
    c = Committed()
    commit(tmp_path, "va", 2, of=2)
    commit(tmp_path, "vb", 1, of=3)
    c.update(loc)
    c.update(loc)  # parts already read are not counted again
    assert (c.samples, c.pairs_done, c.failures, c.videos_done) == (3, 3, 2, 1)
    write_commit_record(loc, "vc-", [{"pair_key": None, "video_id": "vc", "video_uri": "file:///vc.mp4",
                                      "pairs_in_video": None}])  # a video that failed as a whole
    c.update(loc)
    assert c.videos_done == 2


class Lines:
    """What the reporter says, with a wait for the n-th line (ordered by state, not by sleeping)."""

    def __init__(self):
        self.lines: list[str] = []
        self.said = threading.Condition()

    def __call__(self, line: str) -> None:
        with self.said:
            self.lines.append(line)
            self.said.notify_all()

    def wait_for(self, n: int) -> None:
        with self.said:
            assert self.said.wait_for(lambda: len(self.lines) >= n, timeout=30)

    def wait_for_text(self, text: str) -> None:
        with self.said:
            assert self.said.wait_for(lambda: any(text in line for line in self.lines), timeout=30), self.lines


def test_off_a_terminal_a_line_when_the_output_grew_a_heartbeat_and_a_last_one(tmp_path):
    said = Lines()
    with report_progress(Location.parse(str(tmp_path)), lambda: 2, said, tty=False, every_s=0.05, heartbeat_s=3600):
        commit(tmp_path, "va", 2, of=2)
        said.wait_for_text("videos 1/2 · pairs 2 · samples 2 (")  # the reporter ticks on its own
        commit(tmp_path, "vb", 1, of=1)
        said.wait_for_text("videos 2/2 · pairs 3 · samples 3 (")
        seen = len(said.lines)
    lines = said.lines
    assert len(lines) == seen + 1  # unchanged ticks print nothing; the last line always comes
    assert not any("samples 0" in line for line in lines)  # nothing new at the start: no line
    assert "videos 2/2 · pairs 3 · samples 3 (" in lines[-1] and "failures 2" in lines[-1]
    beats = Lines()
    with report_progress(Location.parse(str(tmp_path / "idle")), lambda: 1, beats, tty=False, every_s=0.01, heartbeat_s=0):
        beats.wait_for(2)  # nothing grows, yet the heartbeat keeps coming
    assert all("samples 0" in b for b in beats.lines)


@pytest.fixture(scope="module")
def ray_data(ray_local):
    return ray_local.data


class ModelStage:
    def __init__(self):
        raise UserError(MESSAGE)

    def __call__(self, batch):
        return batch


def _fails(batch):
    raise UserError(MESSAGE)


def _breaks(batch):
    raise ZeroDivisionError("a bug, not the user's fault")


def test_user_error_from_an_actor_constructor_is_one_line(ray_data):
    with pytest.raises(Exception) as info:
        ray_data.range(4).map_batches(ModelStage, compute=ray_data.ActorPoolStrategy(size=1)).materialize()
    assert type(info.value) is not UserError  # Ray wrapped it: the plain except UserError would miss it
    assert user_error_message(info.value) == MESSAGE


def test_user_error_from_a_task_is_one_line_and_a_bug_is_not_a_user_error(ray_data):
    with pytest.raises(Exception) as info:
        ray_data.range(4).map_batches(_fails).materialize()
    assert user_error_message(info.value) == MESSAGE
    with pytest.raises(Exception) as info:
        ray_data.range(4).map_batches(_breaks).materialize()
    assert user_error_message(info.value) is None


@pytest.mark.slow
def test_run_with_an_unloadable_model_exits_2_with_one_line(tmp_path, write_config):
    bad = tmp_path / "bad-model"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "depth_anything", ')  # cut off: not JSON
    res = subprocess.run([sys.executable, "-m", "datagen", "run", "--config", str(write_config()),
                          "--set", f"depth.model={bad}", "--input", REAL_VIDEOS[0], "--output", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "depth.model" in errors[0] and str(bad) in errors[0]
    assert "Traceback" not in out and "File \"" not in out, out[-3000:]


def test_run_summary_is_short_and_names_the_card_and_next_commands():
    import io

    from rich.console import Console

    from datagen.pipeline.report import print_summary
    from datagen.pipeline.run import RunSummary
    from schemas.tasks import TASKS

    stages = {"ingest+shots+pairs": {"in": 3, "out": 2, "pairs": 15, "dropped": {"not_a_video": 1}},
              **{s: {"in": 15, "out": 15, "dropped": {}} for s in ("caption", "segment", "depth", "edges")},
              "assemble": {"in": 15, "dropped": {}}}
    stats = {"smoke": True, "stages": stages, "tasks": {t.name: 15 for t in TASKS}, "samples": 135, "failures": 1,
             "outcome": {"committed_samples": 135, "pending_retry": {"backend_error": 2}, "dropped": {"not_a_video": 1}}}
    buf = io.StringIO()
    print_summary(RunSummary("/data/ds", stats, 61.0, False), Console(file=buf, width=100, soft_wrap=True))
    lines = buf.getvalue().splitlines()
    assert len(lines) <= 15, "\n".join(lines)
    assert lines[0].startswith("SMOKE DATASET")
    assert any("not_a_video=1" in line for line in lines)
    assert "samples per task: text_to_image 15 · instruction_edit 15" in buf.getvalue()
    assert "card: /data/ds/README.md; load a task: datasets.load_dataset('/data/ds', 'text_to_image')" in lines
    assert "pending retry: 2 (backend_error=2): run the same command again to retry them" in lines
    assert lines[-1] == "next: datagen validate /data/ds · datagen preview /data/ds --out preview.html"


def test_a_long_video_s_windows_count_as_one_video_done_when_all_are(tmp_path):
    loc = Location.parse(str(tmp_path))
    uri = "file:///long.mp4"

    def window(w: int, pairs: int) -> list[dict]:
        return [{"pair_key": f"vid-w00{w}/0/{p}", "video_id": f"vid-w00{w}", "video_uri": uri, "pairs_in_video": pairs}
                for p in range(pairs)]

    write_commit_record(loc, "a-", window(0, 2) + window(1, 2)[:1])
    c = Committed()
    c.update(loc)
    assert (c.pairs_done, c.videos_done) == (3, 0)  # window 1 has a pair to go
    write_commit_record(loc, "b-", window(1, 2)[1:] + [
        {"pair_key": None, "video_id": "vid-w002", "video_uri": uri, "pairs_in_video": None}])  # no pairs in it
    c.update(loc)
    assert (c.pairs_done, c.videos_done, c.videos_failed) == (4, 1, 0)
