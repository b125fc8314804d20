"""Per-stage rows/s, busy share and the limiting stage, from Ray Data's operator stats."""
from __future__ import annotations

import io
import json

from rich.console import Console

from datagen.pipeline.throughput import OperatorTimes, add_throughput_table, stage_throughput

STAGES = ["ingest", "shots", "pairs", "caption", "depth", "assemble"]


def test_fused_operators_map_onto_stages_in_order_and_the_busiest_limits():
    ops = [OperatorTimes("FromItems", 10, 0.01, 0.01),
           OperatorTimes("read_listing", 10, 0.01, 0.01),  # busy all its few ms: still not what limits
           OperatorTimes("StreamingRepartition", 10, 0.01, 0.01),
           OperatorTimes("MapBatches(cpu_stage)->MapBatches(cpu_stage)->MapBatches(cpu_stage)", 40, 10.0, 8.0),
           OperatorTimes("MapBatches(CaptionStage)", 40, 20.0, 38.0),  # 2 actors busy 95% of the time
           OperatorTimes("MapBatches(DepthStage)", 40, 20.0, 5.0),
           OperatorTimes("MapBatches(cpu_stage)", 120, 20.0, 2.0),
           OperatorTimes("Write", 4, 20.0, 1.0)]
    out = stage_throughput(ops, STAGES, {"ingest": 4, "caption": 2, "depth": 1, "assemble": 4})
    by = {s["stage"]: s for s in out["stages"]}
    assert list(by) == ["ingest+shots+pairs", "caption", "depth", "assemble", "write"]
    assert by["caption"]["rows_per_s"] == 2.0 and abs(by["caption"]["busy_share"] - 0.95) < 1e-9
    assert by["ingest+shots+pairs"]["busy_share"] == 0.2  # 8 task-s over 10 s x 4 workers
    assert by["depth"]["busy_share"] == 0.25 and by["assemble"]["rows_per_s"] == 6.0
    assert out["limiting"] == "caption"


def test_table_marks_the_limiting_stage():
    out = stage_throughput([OperatorTimes("MapBatches(DepthStage)", 8, 4.0, 4.0)], ["depth"], {"depth": 1})
    buf = io.StringIO()
    add_throughput_table(out, Console(file=buf, width=120))
    assert "limited by depth" in buf.getvalue() and "2.00" in buf.getvalue() and "depth <" in buf.getvalue()


def test_a_real_run_records_throughput_for_every_stage(reference_run):
    out, summary = reference_run
    saved = json.loads((out / "stats.json").read_text())["throughput"]
    assert saved == summary.stats["throughput"]
    names = [s["stage"] for s in saved["stages"]]
    # each operator named for its stage, in pipeline order (ingest, shots and pairs fused, or not)
    assert "+".join(names).replace("+", " ").split() == ["ingest", "shots", "pairs", "text", "safety", "caption",
                                                         "verify", "segment", "depth", "edges", "assemble", "write"], names
    assert saved["limiting"] in names and saved["limiting"] != "write"
    assert all(s["rows_per_s"] > 0 and 0 < s["busy_share"] <= 1 for s in saved["stages"])
