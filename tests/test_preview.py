"""`datagen preview`: what the page shows, that it is self-contained and safe, and that Chromium renders it."""
from __future__ import annotations

import io
from collections import Counter, defaultdict
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from datagen import UserError
from datagen.cli import app
from datagen.io.shards import DatasetWriter
from datagen.io.storage import Location
from datagen.io.synthetic import make_sample
from datagen.io.tables import write_stats
from datagen.preview import write_preview
from datagen.preview.images import false_colour, overlay_mask
from schemas.sample import Provenance
from schemas.tasks import TASKS
from tests.chromium import chromium_path, render

HOSTILE = '<script>console.error("pwned")</script><img src=x onerror="console.error(1)">'
SMOKE_YELLOW = (255, 212, 0)


class PageParts(HTMLParser):
    """Collects what the tests look at: image sources, sample cards per task section, figure classes."""

    def __init__(self, page: str):
        super().__init__()
        self.img_srcs: list[str] = []
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
            self._section = a.get("id")
        elif tag == "article":
            self._card = a["id"]
            self.cards[self._section].append(self._card)
        elif tag == "figure" and self._card:
            self.figures[self._card][a.get("class")] += 1


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
    return root


@pytest.fixture(scope="module")
def page(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "preview.html"
    summary = write_preview(str(dataset), out)
    return out, out.read_text("utf-8"), summary


def test_page_shows_every_task_sample_images_prompts_and_provenance(page):
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
    seg_key = parts.cards["task-referring_segmentation"][0]
    assert parts.figures[seg_key]["role-overlay"] == 1  # the mask drawn over the canvas
    assert "datagen-synthetic" in text and "synthetic test data" in text  # provenance and context
    # failure reasons, grouped and counted; per-stage counts from stats.json beside the drops
    assert "<td>ingest</td><td>not_a_video</td><td>2</td>" in text
    assert "<td>caption</td><td>invalid_json</td><td>1</td>" in text
    assert "<td>ingest</td><td>3</td><td>2</td><td>not_a_video=2</td>" in text
    assert "SMOKE: labels from tiny random models" in text


def test_page_is_self_contained(page):
    _, text, _ = page
    parts = PageParts(text)
    assert len(parts.img_srcs) > 30
    assert all(src.startswith("data:image/") for src in parts.img_srcs)
    assert "Content-Security-Policy" in text


def test_model_written_text_is_escaped(page):
    _, text, _ = page
    parts = PageParts(text)
    assert parts.tags["script"] == 0 and parts.tags["i"] == 0
    assert HOSTILE not in text and "<b>bold</b>" not in text and "<b>moov" not in text
    assert "&lt;script&gt;console.error(&quot;pwned&quot;)&lt;/script&gt;" in text
    assert "&lt;i&gt;vlm&lt;/i&gt;" in text  # provenance fields are escaped too


def test_relabelled_samples_are_marked(tmp_path):
    with DatasetWriter(str(tmp_path / "ds"), dataset_version=2) as w:
        w.add(make_sample(6, pair=0), changed_labels=["depth"])
        w.add(make_sample(6, pair=1))
    write_preview(str(tmp_path / "ds"), tmp_path / "p.html")
    text = (tmp_path / "p.html").read_text()
    assert text.count("relabelled: depth") == 1


def test_limit_and_task_filter(dataset, tmp_path):
    out = tmp_path / "p.html"
    summary = write_preview(str(dataset), out, limit=1)
    assert set(summary.shown.values()) == {1} and len(summary.shown) == len(TASKS)
    for ref in ("depth_estimation", "6"):
        summary = write_preview(str(dataset), out, task=ref, limit=5)
        assert summary.shown == {"depth_estimation": 2}
        assert list(PageParts(out.read_text()).cards) == ["task-depth_estimation"]


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "painting"}, "valid tasks: 0=text_to_image"),
    ({"limit": 0}, "--limit must be at least 1"),
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
    ok = CliRunner().invoke(app, ["preview", str(dataset), "--out", str(out), "--limit", "2"])
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
