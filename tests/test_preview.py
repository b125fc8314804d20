"""`datagen preview`: what the page shows, that it is self-contained and safe, and that Chromium renders it."""
from __future__ import annotations

import io
import json
import tarfile
from collections import Counter, defaultdict
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from datagen import UserError
from datagen.cli import app
from datagen.media import encode_image
from datagen.io.negatives import write_negatives
from datagen.io.shards import DatasetWriter
from datagen.io.storage import Location
from datagen.io.synthetic import make_sample
from datagen.io.tables import write_stats
from datagen.preview import write_preview
from datagen.preview.images import false_colour, overlay_mask
from datagen.preview.select import spread
from schemas.sample import Provenance
from schemas.tasks import TASKS
from tests.chromium import chromium_path, render

HOSTILE = '<script>console.error("pwned")</script><img src=x onerror="console.error(1)">'
SMOKE_YELLOW = (255, 212, 0)


class PageParts(HTMLParser):
    """Collects what the tests look at: image sources, links, sample cards per task section, figure classes."""

    def __init__(self, page: str):
        super().__init__()
        self.img_srcs: list[str] = []
        self.links: list[str] = []  # hrefs inside sample cards
        self.cards: dict[str, list[str]] = defaultdict(list)  # section id -> sample keys
        self.figures: dict[str, Counter] = defaultdict(Counter)  # sample key -> figure classes
        self.tags: Counter = Counter()
        self._section = self._card = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] += 1
        if tag == "img":
            self.img_srcs.append(a.get("src", ""))
        elif tag == "section":
            self._section, self._card = a.get("id"), None
        elif tag == "article":
            self._card = a["id"]
            self.cards[self._section].append(self._card)
        elif tag == "figure" and self._card:
            self.figures[self._card][a.get("class")] += 1
        elif tag == "a" and self._card:
            self.links.append(a["href"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Every task (3 samples of instruction_edit, 2 of the others), a hostile prompt, failures, smoke stats."""
    root = tmp_path_factory.mktemp("ds") / "data"
    with DatasetWriter(str(root)) as w:
        for spec in TASKS:
            for pair in range(3 if spec.id == 1 else 2):
                s = make_sample(spec.id, pair=pair, width=80, height=60)
                if spec.id == 1 and pair == 0:
                    s.record.prompt.base = HOSTILE
                    s.record.prompt.context = "real video frames & <b>bold</b> claims"
                    s.record.labels["caption"] = Provenance("<i>vlm</i>", "r1", {"t": "<script>x</script>"})
                w.add(s)
        w.add_failure(input_uri="file:///v/bad.mp4", video_id="bad", stage="ingest", reason="not_a_video",
                      detail="<b>moov atom not found</b>")
        w.add_failure(input_uri="file:///v/notes.txt", video_id="notes", stage="ingest", reason="not_a_video",
                      detail="no video stream")
        w.add_failure(input_uri="file:///v/a.mp4", video_id="a", key="a_s0000_p0000", stage="caption",
                      reason="invalid_json", detail="expected '}'")
    write_stats(Location.parse(str(root)), {"smoke": True, "stages": {"ingest": {"in": 3, "out": 2}}})
    write_negatives(Location.parse(str(root)), [negative(i) for i in range(3)], prefix="001a-00000-w0000000a-")
    return root


def negative(i: int) -> dict:
    """A pair the judge rejected, as the sink writes it (datagen/io/negatives.py)."""
    rng = np.random.default_rng(i)
    frame = lambda: encode_image(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))  # noqa: E731
    verdict = {"score": 1 + i % 2, "plausible": i != 2, "failing_parts": ["the sky is not red"]}
    return {"pair_key": f"rej{i}_s0000_p0000", "video_uri": "file:///v/rej.mp4", "video_id": f"rej{i}", "shot": 0,
            "pair": 0, "frame_a": 0, "frame_b": 12, "t_a_s": 0.0, "t_b_s": 0.5,
            "instruction": HOSTILE if i == 0 else f"make the sky red {i}", "caption_json": "{}",
            "score": verdict["score"], "verdict_json": json.dumps(verdict),
            "judge_json": json.dumps({"model_id": "tiny-judge"}), "width": 80, "height": 60,
            "image_a": frame(), "image_b": frame()}


def test_rejected_pairs_show_frames_instruction_and_verdict(page):
    _, text, summary = page
    assert summary.rejected == summary.rejected_shown == 3
    section = text[text.index('<section id="rejected">'):]
    assert section.count('<article class="sample rejected"') == 3
    assert section.count("<img ") == 6  # A and B of each
    assert "judge 1/5 · fails: the sky is not red" in section and "judge 2/5" in section
    assert "implausible" in section and HOSTILE not in section  # the instruction is escaped like any prompt
    assert '<a href="#rejected">3 pairs rejected by the judge</a>' in text


def test_rejected_pairs_are_spread_and_bounded_by_per_task(dataset, tmp_path):
    summary = write_preview(str(dataset), tmp_path / "p.html", per_task=2)
    assert (summary.rejected, summary.rejected_shown) == (3, 2)
    again = write_preview(str(dataset), tmp_path / "q.html", per_task=2)
    pick = lambda p: [line for line in p.read_text().split("<article") if "rejected-" in line]  # noqa: E731
    assert [x[:80] for x in pick(tmp_path / "p.html")] == [x[:80] for x in pick(again.path)]  # the same choice


@pytest.fixture(scope="module")
def page(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "preview.html"
    summary = write_preview(str(dataset), out)
    return out, out.read_text("utf-8"), summary


def test_page_shows_every_task_as_a_grid_of_cards_with_folded_facts(page):
    path, text, summary = page
    parts = PageParts(text)
    assert summary.samples_in_dataset == 19 and summary.failures == 3 and summary.smoke
    for spec in TASKS:
        keys = parts.cards[f"task-{spec.name}"]
        assert len(keys) == (3 if spec.id == 1 else 2), spec.name
        n_inputs = len(spec.inputs) * (2 if spec.repeat_assets else 1)
        roles = parts.figures[keys[0]]
        assert sum(roles.values()) >= n_inputs + 1  # every input and the target
        assert roles["role-target"] == 1
    edit = parts.figures[parts.cards["task-instruction_edit"][1]]
    assert edit == Counter({"role-canvas": 1, "role-target": 1})  # A -> B
    assert 'role-canvas"><a href' in text and '<span class="arrow">→</span>' in text
    seg_key = parts.cards["task-referring_segmentation"][0]
    assert parts.figures[seg_key]["role-overlay"] == 1  # the mask drawn over the canvas
    assert text.count("<details><summary>facts</summary>") == 19  # facts folded, one per card
    assert "datagen-synthetic" in text and "synthetic test data" in text  # provenance and context
    # failure reasons, grouped, counted, with their kind and examples; per-stage counts beside the drops
    assert "<td>ingest</td><td>not_a_video</td><td>permanent</td><td>2</td>" in text
    assert "<td>caption</td><td>invalid_json</td><td>permanent</td><td>1</td>" in text
    assert "<li>file:///v/notes.txt: no video stream</li>" in text
    assert "<td>ingest</td><td>3</td><td>2</td><td>not_a_video=2</td>" in text
    assert "SMOKE: labels from tiny random models" in text


def test_thumbnails_are_inline_and_link_to_full_images_beside_the_page(page):
    path, text, summary = page
    parts = PageParts(text)
    assert len(parts.img_srcs) > 30
    assert all(src.startswith("data:image/") for src in parts.img_srcs)
    assert "Content-Security-Policy" in text
    assert len(parts.links) >= 19 * 1 and all(h.startswith(f"{summary.files_dir.name}/") for h in parts.links)
    for href in parts.links:
        full = path.parent / href
        assert Image.open(full).size == (80, 60), href  # the full image, not the thumbnail
    depth = next(h for h in parts.links if "/depth_estimation/" in h and ".target." in h)
    assert Image.open(path.parent / depth).mode == "RGB"  # 16-bit depth linked false-coloured


def test_model_written_text_is_escaped(page):
    _, text, _ = page
    parts = PageParts(text)
    assert parts.tags["script"] == 0 and parts.tags["i"] == 0
    assert HOSTILE not in text and "<b>bold</b>" not in text and "<b>moov" not in text
    assert "&lt;script&gt;console.error(&quot;pwned&quot;)&lt;/script&gt;" in text
    assert "&lt;i&gt;vlm&lt;/i&gt;" in text  # provenance fields are escaped too


def rewrite_tar(path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_unknown_fields_of_a_newer_sample_still_render_folded(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(str(root)) as w:
        w.add(make_sample(1))
    shard = next((root / "shards" / "instruction_edit").glob("*.tar"))
    with tarfile.open(shard) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    name = next(n for n in members if n.endswith(".json"))
    record = json.loads(members[name])
    record["aesthetics"] = {"score": 0.83, "judge": "<b>vlm-judge</b>"}  # a field from a later version
    record["verify"] = {"score": 2, "plausible": False, "failing_parts": ["the cup"]}  # the judge's verdict
    record["facts"]["flow_px"] = [1.5, 2.0]
    members[name] = json.dumps(record).encode()
    rewrite_tar(shard, list(members.items()))
    summary = write_preview(str(root), tmp_path / "p.html")
    text = (tmp_path / "p.html").read_text()
    assert summary.shown["instruction_edit"] == 1 and not summary.read_errors
    other = text[text.index("other fields"):]
    assert "<th>aesthetics</th>" in other and "0.83" in other and "&lt;b&gt;vlm-judge" in other
    assert "judge 2/5 · implausible · fails: the cup" in text  # the judge's score on the card itself
    assert "<th>flow_px</th><td>[1.5, 2.0]</td>" in text


def test_relabelled_samples_are_marked(tmp_path):
    with DatasetWriter(str(tmp_path / "ds"), dataset_version=2) as w:
        w.add(make_sample(6, pair=0), changed_labels=["depth"])
        w.add(make_sample(6, pair=1))
    write_preview(str(tmp_path / "ds"), tmp_path / "p.html")
    text = (tmp_path / "p.html").read_text()
    assert text.count("relabelled: depth") == 1


def test_per_task_spreads_over_the_task_and_task_filter(dataset, tmp_path):
    out = tmp_path / "p.html"
    summary = write_preview(str(dataset), out, per_task=1)
    assert set(summary.shown.values()) == {1} and len(summary.shown) == len(TASKS)
    summary = write_preview(str(dataset), out, task="instruction_edit", per_task=2)
    keys = PageParts(out.read_text()).cards["task-instruction_edit"]
    assert [k.split("_p")[1][:4] for k in keys] == ["0000", "0002"]  # first and last, not the first two
    assert spread(10, 3) == [0, 4, 9] and spread(2, 5) == [0, 1]
    for ref in ("depth_estimation", "6"):
        summary = write_preview(str(dataset), out, task=ref, per_task=5)
        assert summary.shown == {"depth_estimation": 2}
        assert list(PageParts(out.read_text()).cards) == ["task-depth_estimation"]


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "painting"}, "valid tasks: 0=text_to_image"),
    ({"per_task": 0}, "--per-task must be at least 1"),
])
def test_bad_arguments_are_user_errors(dataset, tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        write_preview(str(dataset), tmp_path / "p.html", **kwargs)
    assert not (tmp_path / "p.html").exists()


def test_missing_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        write_preview(str(tmp_path / "nope"), tmp_path / "p.html")


def test_dataset_with_only_failures_still_previews(tmp_path):
    with DatasetWriter(str(tmp_path / "ds")) as w:
        w.add_failure(input_uri="file:///v/x.avi", video_id="x", stage="ingest", reason="no_video_stream", detail="")
    summary = write_preview(str(tmp_path / "ds"), tmp_path / "p.html")
    text = (tmp_path / "p.html").read_text()
    assert summary.samples_in_dataset == 0 and sum(summary.shown.values()) == 0
    assert "no_video_stream" in text and "0 of 0 samples shown" in text


def test_undecodable_member_is_reported_on_the_page(tmp_path):
    s = make_sample(6)
    s.media["target.png"] = b"not a png at all"
    with DatasetWriter(str(tmp_path / "ds")) as w:
        w.add(s)
    write_preview(str(tmp_path / "ds"), tmp_path / "p.html")
    text = (tmp_path / "p.html").read_text()
    assert "cannot decode target.png" in text
    assert len(PageParts(text).img_srcs) == 1  # the canvas still shows


def test_depth_is_false_coloured_by_its_own_range():
    depth = np.tile(np.linspace(1000, 3000, 50).astype(np.uint16), (10, 1))
    rgb = false_colour(depth)
    assert rgb.shape == (10, 50, 3) and rgb.dtype == np.uint8
    assert rgb[:, 0].mean() < 20 and rgb[:, -1].mean() > 150  # near end dark, far end bright
    assert np.ptp(rgb[0, 25].astype(int)) > 30  # colour, not grey
    assert false_colour(np.full((4, 4), 7, np.uint16)).shape == (4, 4, 3)  # flat map: no division by zero


def test_mask_overlay_tints_only_the_masked_region():
    rgb = np.full((20, 30, 3), 100, np.uint8)
    mask = np.zeros((10, 15), np.uint8)
    mask[:, :5] = 255  # a smaller mask is resized onto the image
    out = overlay_mask(rgb, mask)
    assert (out[:, 10:] == 100).all()
    assert (out[:, :10] != 100).any(axis=2).all()


def test_cli_writes_the_page_and_reports_errors_in_one_line(dataset, tmp_path):
    out = tmp_path / "cli.html"
    ok = CliRunner().invoke(app, ["preview", str(dataset), "--out", str(out), "--per-task", "2"])
    assert ok.exit_code == 0, ok.output
    assert out.stat().st_size > 10_000
    bad = CliRunner().invoke(app, ["preview", str(dataset), "--out", str(out), "--task", "nope"])
    assert bad.exit_code == 2 and "unknown task 'nope'" in bad.output


def screenshot_spread(png: bytes) -> float:
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), np.float32).std())


def yellow_pixels(png: bytes) -> int:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.int32)
    return int((np.abs(rgb - SMOKE_YELLOW).sum(axis=2) < 30).sum())


needs_chromium = pytest.mark.skipif(chromium_path() is None,
                                    reason="chromium not installed (CI installs it in .ci/run)")


@needs_chromium
def test_chromium_renders_the_page_without_console_errors(page):
    path, _, _ = page
    shown = render(path.as_uri())
    assert shown.console_errors == []
    assert shown.images > 30 and shown.broken_images == 0  # every embedded image decoded
    assert screenshot_spread(shown.screenshot_png) > 20  # not blank
    assert yellow_pixels(shown.screenshot_png) > 5_000  # the smoke banner is on screen


@needs_chromium
def test_chromium_check_catches_errors_and_blank_pages(tmp_path):
    """The render check above can fail: a script error, a broken image and a blank page are all caught."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="data:image/png;base64,AAAA">'
                   '<script>console.error("boom"); missing_fn();</script></body></html>')
    shown = render(bad.as_uri())
    assert any("boom" in m for m in shown.console_errors)
    assert any("missing_fn" in m for m in shown.console_errors)
    assert shown.broken_images == 1
    assert screenshot_spread(shown.screenshot_png) < 1


GRID_COLUMNS_JS = """(() => { const s = document.querySelector('#task-instruction_edit .grid');
  const tops = [...s.querySelectorAll('article')].map(a => a.offsetTop);
  return tops.filter(t => t === tops[0]).length; })()"""
FOLDED_JS = "[...document.querySelectorAll('details')].filter(d => d.open).length"
REJECTED_JS = """[...document.querySelectorAll('#rejected article')].filter(a => a.offsetHeight > 0
  && [...a.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)).length"""


@needs_chromium
def test_chromium_shows_the_cards_as_a_grid_with_facts_folded(page):
    path, _, _ = page
    shown = render(path.as_uri(), probes={"columns": GRID_COLUMNS_JS, "open_details": FOLDED_JS,
                                          "rejected": REJECTED_JS})
    assert shown.values["columns"] == 3  # the three edit cards share one row at 1280 px
    assert shown.values["open_details"] == 0
    assert shown.values["rejected"] == 3  # the judge's rejects, on screen with both frames decoded


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory):
    """10,000 samples over every task and 30,000 failure rows over ten reasons."""
    from datagen.io.shards import write_failures
    from datagen.io.synthetic import write_many_samples

    root = tmp_path_factory.mktemp("big") / "ds"
    write_many_samples(str(root), 10_000)
    reasons = ["not_a_video", "truncated", "corrupt", "too_short", "too_small", "audio_only", "no_pairs",
               "invalid_json", "refusal", "backend_error"]
    write_failures(Location.parse(str(root)), [
        {"input_uri": f"file:///corpus/v{i}.mp4", "video_id": f"v{i}", "key": None, "stage": "ingest",
         "reason": reasons[i % len(reasons)], "detail": "x" * 200} for i in range(30_000)])
    write_stats(Location.parse(str(root)), {"smoke": True, "stages": {}})
    return root


@pytest.fixture(scope="module")
def big_page(big_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("big_page") / "big.html"
    return out, write_preview(str(big_dataset), out)


@pytest.mark.slow
def test_preview_of_10000_samples_is_a_few_mb(big_page):
    out, summary = big_page
    size_bytes = out.stat().st_size
    print(f"preview_page_10000_samples: {size_bytes / 1e6:.2f} MB")
    assert summary.samples_in_dataset == 10_000 and summary.failures == 30_000
    assert sum(summary.shown.values()) == 24 * len(TASKS)
    assert size_bytes <= 5_000_000, size_bytes
    text = out.read_text()
    assert text.count('<ul class="examples">') == 10 and text.count("<li>") == 30  # 3 examples per reason


@pytest.mark.slow
@needs_chromium
def test_chromium_renders_the_10000_sample_preview_as_a_grid(big_page):
    out, _ = big_page
    shown = render(out.as_uri(), probes={"columns": GRID_COLUMNS_JS})
    assert shown.console_errors == [] and shown.broken_images == 0 and shown.images > 400
    assert shown.values["columns"] >= 3
    assert screenshot_spread(shown.screenshot_png) > 20


def test_samples_are_found_when_a_shard_does_not_match_its_manifest_layout(tmp_path):
    root = tmp_path / "ds"
    with DatasetWriter(str(root)) as w:
        for pair in range(3):
            w.add(make_sample(7, pair=pair))
    shard = next((root / "shards" / "edge_detection").glob("*.tar"))
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    rewrite_tar(shard, members[::-1])  # by hand: samples in reverse order, not where the manifest says
    summary = write_preview(str(root), tmp_path / "p.html", task="edge_detection")
    text = (tmp_path / "p.html").read_text()
    assert summary.shown == {"edge_detection": 3} and not summary.read_errors
    assert all(f"edge_detection sample {p}" in text for p in range(3))
