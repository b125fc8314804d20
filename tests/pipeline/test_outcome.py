"""Where a run stands after faults: committed, pending retry by reason, dropped by reason;
what `datagen run` and `datagen stats` say about it."""
from __future__ import annotations

from typer.testing import CliRunner

from datagen.cli import app
from datagen.io.storage import Location
from datagen.io.tables import compute_stats
from datagen.pipeline.outcome import run_outcome, standing_failures
from tests.pipeline.test_sink_resume import assembled, write


def test_pending_until_a_later_run_settles_the_pair(tmp_path):
    loc = Location.parse(str(tmp_path))
    write(loc, assembled(range(3), failed_pair=1, reason="backend_error"), prefix="001abcd-00000-w0000000a-")
    assert run_outcome(loc) == {"committed_samples": 18, "pending_retry": {"backend_error": 1}, "dropped": {}}
    write(loc, assembled([1]), prefix="002abcd-00000-w0000000b-")  # the rerun, service healthy
    assert run_outcome(loc) == {"committed_samples": 27, "pending_retry": {}, "dropped": {}}


def test_a_transient_failure_a_rerun_fixed_is_history_not_a_drop(tmp_path):
    loc = Location.parse(str(tmp_path))
    write(loc, assembled(range(3), failed_pair=1, reason="backend_error"), prefix="001abcd-00000-w0000000a-")
    write(loc, assembled([4], failed_pair=4, reason="refusal"), prefix="001abcd-00001-w0000000a-")
    assert sorted(f["reason"] for f in standing_failures(loc)) == ["backend_error", "refusal"]
    write(loc, assembled([1]), prefix="002abcd-00000-w0000000b-")  # the rerun, service healthy
    standing = standing_failures(loc)
    assert [f["reason"] for f in standing] == ["refusal"]  # the log keeps both rows; one still counts
    dropped = {st: v["dropped"] for st, v in compute_stats(loc, None, None, standing)["stages"].items()}
    assert dropped == {"caption": {"refusal": 1}}, dropped


def test_permanent_drops_count_until_retry_failed_makes_the_pair(tmp_path):
    loc = Location.parse(str(tmp_path))
    write(loc, assembled(range(2), failed_pair=1, reason="refusal"), prefix="001abcd-00000-w0000000a-")
    assert run_outcome(loc)["dropped"] == {"refusal": 1}
    write(loc, assembled([1]), prefix="002abcd-00000-w0000000b-")  # --retry-failed refusal, now answered
    assert run_outcome(loc) == {"committed_samples": 18, "pending_retry": {}, "dropped": {}}


def test_stats_command_shows_committed_pending_and_dropped(tmp_path):
    loc = Location.parse(str(tmp_path))
    rows = assembled(range(2), failed_pair=1, reason="backend_error") + assembled([5], failed_pair=5)
    write(loc, rows)
    res = CliRunner().invoke(app, ["stats", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "committed: 9 samples" in res.output
    assert "pending retry: 1 (backend_error=1): run the same command again" in res.output
    assert "dropped for good: 1 (invalid_json=1)" in res.output


def test_retry_failed_takes_only_permanent_reasons(tmp_path):
    res = CliRunner().invoke(app, ["run", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                                   "--retry-failed", "backend_error"])
    assert res.exit_code == 2 and "'backend_error' is transient" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["run", "--input", str(tmp_path), "--output", str(tmp_path / "o"),
                                   "--retry-failed", "bad_luck"])
    assert res.exit_code == 2 and "is not a failure reason" in res.output


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("datagen.pipeline.run.run_pipeline", interrupted)
    res = CliRunner().invoke(app, ["run", "--input", str(tmp_path), "--output", str(tmp_path / "ds")])
    assert res.exit_code == 130 and "interrupted" in res.output and "run the same command again" in res.output


def test_stage_yields_count_a_long_video_as_one_file_failed_only_when_no_window_made_a_pair(tmp_path):
    from datagen.pipeline.commit import write_commit_record
    from datagen.pipeline.run import stage_yields

    loc = Location.parse(str(tmp_path))
    long_uri, bad_uri = "file:///long.mp4", "file:///bad.mp4"
    write_commit_record(loc, "a-", [{"pair_key": "vid-w000/0/0", "video_id": "vid-w000", "video_uri": long_uri,
                                     "pairs_in_video": 1}])
    standing = [  # a window of the long file without pairs, and a file that made none at all
        {"input_uri": long_uri, "video_id": "vid-w001", "key": None, "stage": "pairs", "reason": "no_pairs"},
        {"input_uri": bad_uri, "video_id": "bad-w000", "key": None, "stage": "pairs", "reason": "no_pairs"},
        {"input_uri": bad_uri, "video_id": "bad-w001", "key": None, "stage": "shots", "reason": "no_pairs"},
    ]
    yields = stage_yields(loc, 2, [], standing)
    assert yields["ingest+shots+pairs"] == {"in": 2, "out": 1, "pairs": 1}  # by failure rows it was 2 - 3 = -1
