"""`datagen preview`: one self-contained HTML page of a dataset's samples, labels and failures.

Every image is an inline `data:` URI and the page carries no script: a Content-Security-Policy
forbids scripts and any fetch, so prompts written by a VLM (escaped anyway) cannot run or load
anything even if escaping were missed somewhere.
"""
from __future__ import annotations

import html
import itertools
import json
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from datagen import UserError
from datagen.io.reader import iter_samples
from datagen.io.storage import Location
from datagen.io.tables import read_failures, read_manifest, read_stats
from datagen.preview.images import data_uri, overlay_mask, viewable
from schemas.sample import ImageRef, Sample
from schemas.tasks import TASKS, ImageKind, Role, TaskSpec
from schemas.tasks import task as task_spec

MAX_FAILURE_ROWS = 500  # the full list lives in failures/*.parquet; the page shows a readable prefix
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SMOKE_BANNER = "SMOKE: labels from tiny random models"
# corrupt shard or image, bad JSON, missing member, an image too large to be a real frame
_READ_ERRORS = (OSError, ValueError, KeyError, tarfile.TarError, Image.DecompressionBombError)


@dataclass
class PreviewSummary:
    path: Path
    shown: dict[str, int] = field(default_factory=dict)  # task name -> samples on the page
    samples_in_dataset: int = 0
    failures: int = 0
    smoke: bool = False
    read_errors: list[str] = field(default_factory=list)


def e(value: Any) -> str:
    """Escape anything for HTML text and attributes (prompts come from a model: treat as hostile)."""
    return html.escape(str(value), quote=True)


def write_preview(dataset: str, out: Path, task: str | int | None = None, limit: int = 24) -> PreviewSummary:
    if limit < 1:
        raise UserError(f"--limit must be at least 1 sample per task, got {limit}")
    try:
        specs = list(TASKS) if task is None else [task_spec(task)]
    except KeyError as err:
        raise UserError(f"--task: {err.args[0]}") from None
    loc = Location.parse(dataset)
    if not loc.exists(""):
        raise UserError(f"dataset {dataset!r} not found; pass the --output directory of a run")
    manifest = read_manifest(loc).select(["key", "task", "changed_labels"]).to_pydict()
    counts = Counter(manifest["task"])
    relabelled = {k: c for k, c in zip(manifest["key"], manifest["changed_labels"]) if c}  # set by `relabel`
    failures = read_failures(loc)
    # grouped in Arrow: a run over a broken corpus may have millions of failure rows
    groups = failures.group_by(["stage", "reason"], use_threads=False).aggregate(
        [("stage", "count"), ("detail", "first"), ("input_uri", "first"), ("key", "first")]).to_pylist()
    stats = read_stats(loc) or {}
    summary = PreviewSummary(Path(out), samples_in_dataset=sum(counts.values()), failures=failures.num_rows,
                             smoke=bool(stats.get("smoke")))
    sections = [_task_section(loc, spec, limit, counts.get(spec.name, 0), relabelled, summary) for spec in specs]
    body = [
        f"<header><h1>datagen preview</h1><p>dataset <code>{e(dataset)}</code>: "
        f"{summary.samples_in_dataset} samples, {summary.failures} failure rows</p></header>",
        f'<div class="smoke">{e(SMOKE_BANNER)}; do not train on them</div>' if summary.smoke else "",
        _counts_table(counts, summary.shown, specs),
        _stages_table(stats.get("stages") or {}, groups),
        _failures_section(groups, failures.slice(0, MAX_FAILURE_ROWS).to_pylist(), failures.num_rows),
        *sections,
    ]
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><link rel="icon" href="data:,">'
            f"<title>datagen preview: {e(dataset)}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
    out = Path(out).resolve()
    Location.parse(str(out.parent)).write_bytes(out.name, page.encode("utf-8"))
    return summary


def _task_section(loc: Location, spec: TaskSpec, limit: int, count: int, relabelled: dict[str, list[str]],
                  summary: PreviewSummary) -> str:
    cards, note = [], ""
    if count:
        try:
            for sample in itertools.islice(iter_samples(loc, [spec.id]), limit):
                cards.append(_sample_card(sample, relabelled.get(sample.key, [])))
        except _READ_ERRORS as err:
            note = f"could not read the shards of {spec.name} past sample {len(cards)}: {type(err).__name__}: {err}"
            summary.read_errors.append(note)
    summary.shown[spec.name] = len(cards)
    head = f'<section class="task" id="task-{e(spec.name)}"><h2>{spec.id} · {e(spec.name)}</h2>'
    info = f"<p>{len(cards)} of {count} samples shown; base prompt: {e(spec.base_prompt)}</p>"
    if note:
        info += f'<p class="error">{e(note)}</p>'
    return head + info + '<div class="cards">' + "".join(cards) + "</div></section>"


def _sample_card(sample: Sample, changed_labels: list[str]) -> str:
    r = sample.record
    figures, shown = [], {}
    for ref in [*r.prompt.images, r.target]:
        try:
            shown[ref.member] = viewable(sample.media[ref.member], ref.kind)
        except _READ_ERRORS as err:
            figures.append(f'<figure class="broken"><p class="error">cannot decode {e(ref.member)}: '
                           f"{e(type(err).__name__)}: {e(err)}</p><figcaption><b>{e(ref.role.value)}</b> "
                           f"{e(_caption(ref))}</figcaption></figure>")
            continue
        figures.append(_figure(data_uri(shown[ref.member], ref.kind), ref.role.value, _caption(ref)))
    figures += [_figure(data_uri(overlay_mask(shown[b.member], shown[m.member][..., 0]), ImageKind.rgb),
                        "overlay", f"mask {m.member} over {b.role.value} {b.member}")
                for m, b in _overlays([*r.prompt.images, r.target], shown)]
    s = r.source
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(_text(v))}</td></tr>" for k, v in sorted(r.facts.items()))
    prov = "".join(f"<tr><th>{e(stage)}</th><td>{e(p.model_id)}</td><td>{e(p.revision)}</td>"
                   f"<td>{e(_text(p.params))}</td></tr>" for stage, p in sorted(r.labels.items()))
    changed = f'<p class="changed">relabelled: {e(", ".join(changed_labels))}</p>' if changed_labels else ""
    return (f'<article class="sample" id="{e(r.key)}"><h3>{e(r.key)}</h3>{changed}'
            f'<div class="images">{"".join(figures)}</div>'
            f'<dl class="prompt"><dt>base</dt><dd>{e(r.prompt.base)}</dd>'
            f"<dt>context</dt><dd>{e(r.prompt.context)}</dd></dl>"
            f'<p class="source">{e(s.video_uri)} · shot {s.shot} · pair {s.pair} · frames {s.frame_a}→{s.frame_b}'
            f" · {s.t_a_s:.2f}s→{s.t_b_s:.2f}s</p>"
            f'<table class="facts"><caption>measured facts</caption>{facts}</table>'
            f'<table class="prov"><caption>provenance</caption><tr><th>stage</th><th>model</th><th>revision</th>'
            f"<th>params</th></tr>{prov}</table></article>")


def _overlays(refs: list[ImageRef], shown: dict) -> Iterable[tuple[ImageRef, ImageRef]]:
    """Pair each decoded mask with the scene it cuts out of: the canvas, else an RGB target."""
    bases = [r for r in refs if r.kind is ImageKind.rgb and r.member in shown and r.role in (Role.canvas, Role.target)]
    bases.sort(key=lambda r: r.role is not Role.canvas)
    for m in refs:
        if m.kind is ImageKind.mask and m.member in shown and bases:
            yield m, bases[0]


def _figure(uri: str, role: str, caption: str) -> str:
    """An image with its role in bold; `caption` is plain text (escaped here)."""
    return (f'<figure class="role-{e(role)}"><img src="{uri}" alt="{e(role)}: {e(caption)}">'
            f"<figcaption><b>{e(role)}</b> {e(caption)}</figcaption></figure>")


def _caption(ref: ImageRef) -> str:
    label = f" · {ref.label}" if ref.label else ""
    return f"{ref.member} · {ref.kind.value} · {ref.width}×{ref.height}px{label}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _counts_table(counts: Counter, shown: dict[str, int], specs: list[TaskSpec]) -> str:
    rows = "".join(f'<tr><td>{t.id}</td><td><a href="#task-{e(t.name)}">{e(t.name)}</a></td>'
                   f"<td>{counts.get(t.name, 0)}</td><td>{shown.get(t.name, 0)}</td></tr>" for t in specs)
    return ('<section id="counts"><h2>samples per task</h2><table><tr><th>id</th><th>task</th>'
            f"<th>in dataset</th><th>shown</th></tr>{rows}</table></section>")


def _stages_table(stages: dict[str, dict], groups: list[dict]) -> str:
    dropped: dict[str, list[str]] = defaultdict(list)
    for g in sorted(groups, key=lambda g: g["reason"]):
        dropped[g["stage"]].append(f"{g['reason']}={g['stage_count']}")
    names = list(stages) + [s for s in dropped if s not in stages]
    if not names:
        return ""
    rows = "".join(f"<tr><td>{e(s)}</td><td>{e(stages.get(s, {}).get('in', '-'))}</td>"
                   f"<td>{e(stages.get(s, {}).get('out', '-'))}</td><td>{e(', '.join(dropped[s]) or '-')}</td></tr>"
                   for s in names)
    return ('<section id="stages"><h2>stages</h2><table><tr><th>stage</th><th>in</th><th>out</th>'
            f"<th>dropped (by reason)</th></tr>{rows}</table></section>")


def _failures_section(groups: list[dict], first_rows: list[dict], total: int) -> str:
    if not total:
        return '<section id="failures"><h2>failures</h2><p>none</p></section>'
    ranked = sorted(groups, key=lambda g: (-g["stage_count"], g["stage"], g["reason"]))
    summary = "".join(f"<tr><td>{e(g['stage'])}</td><td>{e(g['reason'])}</td><td>{g['stage_count']}</td>"
                      f"<td>{e(g['detail_first'] or '')}</td>"
                      f"<td>{e(g['input_uri_first'] or g['key_first'] or '')}</td></tr>"
                      for g in ranked)
    listed = "".join(f"<tr><td>{e(f['stage'])}</td><td>{e(f['reason'])}</td><td>{e(f['input_uri'] or '')}</td>"
                     f"<td>{e(f['key'] or '')}</td><td>{e(f['detail'] or '')}</td></tr>" for f in first_rows)
    more = f" (first {len(first_rows)})" if total > len(first_rows) else ""
    return ('<section id="failures"><h2>failures by reason</h2><table><tr><th>stage</th><th>reason</th>'
            f"<th>rows</th><th>example detail</th><th>example input</th></tr>{summary}</table>"
            f"<details><summary>all {total} failure rows{more}</summary><table><tr><th>stage</th>"
            f"<th>reason</th><th>input</th><th>key</th><th>detail</th></tr>{listed}</table></details></section>")


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{margin:0 0 4px}h2{border-bottom:1px solid #ccc;padding-bottom:2px}
table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
.smoke{background:#ffd400;color:#000;font-weight:bold;font-size:20px;padding:10px;border:3px solid #000;margin:8px 0}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.sample{background:#fff;border:1px solid #ccc;border-radius:6px;padding:8px;max-width:1040px}
.sample h3{margin:0 0 6px;font-size:13px;font-family:monospace}
.images{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;padding:4px;border:3px solid #999;border-radius:4px;max-width:330px}
figure img{display:block;height:160px;width:auto;max-width:320px}
figcaption{font-size:12px;word-break:break-all}
.role-canvas{border-color:#2a7de1}.role-asset{border-color:#2ca02c}.role-control{border-color:#9467bd}
.role-target{border-color:#d62728}.role-overlay{border-color:#ff0060}
.prompt dt{font-weight:bold}.prompt dd{margin:0 0 4px 12px;white-space:pre-wrap}
.source{font-family:monospace;font-size:12px;color:#555;word-break:break-all}
.facts,.prov{font-size:12px}.facts caption,.prov caption{text-align:left;font-weight:bold}
.error{color:#b00020;font-weight:bold}.changed{color:#8a4b00;font-weight:bold;margin:0 0 4px}
"""
