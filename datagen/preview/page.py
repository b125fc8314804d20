"""`datagen preview`: one HTML page per dataset: a compact grid per task, failures by reason,
and the pairs the judge rejected (the negatives table) with its score and reasons.

Each sample is one small card: its input images, an arrow, its target (an edit reads
A → B), the base prompt (the instruction for edits) and, folded away, its measured facts,
provenance and any field this version does not know. Thumbnails are inline `data:` URIs
that link to the full image, written beside the page (`<page>_files/`). The page's size
grows with `per_task`, not with the dataset.

The page carries no script: a Content-Security-Policy forbids scripts and any fetch, so
prompts written by a VLM (escaped anyway) cannot run or load anything even if escaping
were missed somewhere.
"""
from __future__ import annotations

import hashlib
import html
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
from PIL import Image

from datagen import UserError
from datagen.io.negatives import read_negatives
from datagen.io.storage import Location
from datagen.io.tables import read_failures, read_manifest, read_stats
from datagen.preview.images import data_uri, full_image, overlay_mask, viewable
from datagen.preview.select import RawSample, choose, failure_groups, read_chosen
from schemas.reasons import REASONS
from schemas.sample import SampleRecord
from schemas.tasks import TASKS, ImageKind, TaskSpec
from schemas.tasks import task as task_spec

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SMOKE_BANNER = "SMOKE: labels from tiny random models"
CARD_IMAGE_PX = 140  # a thumbnail (up to 128 px wide) with its frame and gap
KNOWN_FIELDS = frozenset(SampleRecord.__slots__)  # anything else in a sample's JSON is shown folded, as is
# corrupt shard or image, bad JSON, missing member, an image too large to be a real frame
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, tarfile.TarError, Image.DecompressionBombError)
_KINDS = {k.value: k for k in ImageKind}


@dataclass
class PreviewSummary:
    path: Path
    files_dir: Path | None = None  # full-size images the thumbnails link to
    shown: dict[str, int] = field(default_factory=dict)  # task name -> samples on the page
    samples_in_dataset: int = 0
    failures: int = 0
    smoke: bool = False
    read_errors: list[str] = field(default_factory=list)
    rejected: int = 0  # pairs the judge rejected (negatives table)
    rejected_shown: int = 0


def e(value: Any) -> str:
    """Escape anything for HTML text and attributes (prompts come from a model: treat as hostile)."""
    return html.escape(str(value), quote=True)


def write_preview(dataset: str, out: Path, task: str | int | None = None, per_task: int = 24) -> PreviewSummary:
    if per_task < 1:
        raise UserError(f"--per-task must be at least 1 sample per task, got {per_task}")
    try:
        specs = list(TASKS) if task is None else [task_spec(task)]
    except KeyError as err:
        raise UserError(f"--task: {err.args[0]}") from None
    loc = Location.dataset(dataset)
    out = Path(out).resolve()
    manifest = read_manifest(loc).select(["key", "task", "shard", "members", "changed_labels"])
    counts = {c["values"]: c["counts"] for c in pc.value_counts(manifest.column("task")).to_pylist()}
    changed = manifest.filter(pc.greater(pc.list_value_length(manifest.column("changed_labels")), 0))
    relabelled = dict(zip(changed.column("key").to_pylist(), changed.column("changed_labels").to_pylist()))
    failures = read_failures(loc)
    stats = read_stats(loc) or {}
    summary = PreviewSummary(out, out.parent / f"{out.stem}_files", samples_in_dataset=manifest.num_rows,
                             failures=failures.num_rows, smoke=bool(stats.get("smoke")))
    groups = failure_groups(failures)
    sections = [_task_section(loc, spec, per_task, manifest, counts.get(spec.name, 0), relabelled, summary)
                for spec in specs]
    rejected = _rejected_section(loc, per_task, summary) if task is None else ""  # pairs: of no one task
    body = [
        f"<header><h1>datagen preview</h1><p>dataset <code>{e(dataset)}</code>: "
        f"{summary.samples_in_dataset} samples, {summary.failures} failure rows, "
        f'<a href="#rejected">{summary.rejected} pairs rejected by the judge</a></p></header>',
        f'<div class="smoke">{e(SMOKE_BANNER)}; do not train on them</div>' if summary.smoke else "",
        _counts_table(counts, summary.shown, specs),
        _stages_table(stats.get("stages") or {}, groups),
        _failures_section(groups, failures.num_rows),
        *sections,
        rejected,
    ]
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}"><link rel="icon" href="data:,">'
            f"<title>datagen preview: {e(dataset)}</title><style>{_STYLE}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
    Location.parse(str(out.parent)).write_bytes(out.name, page.encode("utf-8"))
    return summary


def _task_section(loc: Location, spec: TaskSpec, per_task: int, manifest, count: int,
                  relabelled: dict[str, list[str]], summary: PreviewSummary) -> str:
    cards, note = [], ""
    if count:
        try:
            for raw in read_chosen(loc, choose(manifest, spec.name, per_task)):
                cards.append(_card(raw, summary.files_dir, spec.name, relabelled.get(raw.key, [])))
        except _READ_ERRORS as err:
            note = f"could not read the shards of {spec.name} past sample {len(cards)}: {type(err).__name__}: {err}"
            summary.read_errors.append(note)
    summary.shown[spec.name] = len(cards)
    head = f'<section class="task" id="task-{e(spec.name)}"><h2>{spec.id} · {e(spec.name)}</h2>'
    info = f"<p>{len(cards)} of {count} samples shown, spread over the task; base prompt: {e(spec.base_prompt)}</p>"
    if note:
        info += f'<p class="error">{e(note)}</p>'
    # a column fits one card's images side by side: inputs, the arrow, the target (and an overlay)
    images = len(spec.inputs) * (2 if spec.repeat_assets else 1) + 1 + (spec.target is ImageKind.mask)
    style = f"grid-template-columns:repeat(auto-fill,minmax({images * CARD_IMAGE_PX + 48}px,1fr))"
    return head + info + f'<div class="grid" style="{style}">' + "".join(cards) + "</div></section>"


def _card(raw: RawSample, files_dir: Path, task_dir: str, changed_labels: list[str]) -> str:
    r = raw.record
    prompt = r.get("prompt") or {}
    refs = [*(prompt.get("images") or []), r.get("target") or {}]
    inputs, target, shown = [], [], {}
    for i, ref in enumerate(refs):
        member, role = str(ref.get("member", "?")), str(ref.get("role", "?"))
        kind = _KINDS.get(ref.get("kind"))
        try:
            if kind is None:
                raise ValueError(f"unknown image kind {ref.get('kind')!r}")
            shown[member] = viewable(raw.media[member], kind)
            data, ext = full_image(raw.media[member], kind, shown[member])
            rel = f"{task_dir}/{raw.key}.{member.split('.')[0]}.{ext}"
            (files_dir / task_dir).mkdir(parents=True, exist_ok=True)
            (files_dir / rel).write_bytes(data)  # plain writes: the page, written last, is what links them
            fig = _figure(data_uri(shown[member], kind), role, ref.get("label") or "", f"{files_dir.name}/{rel}", member)
        except _READ_ERRORS as err:
            fig = (f'<figure class="broken role-{e(role)}"><p class="error">cannot decode {e(member)}: '
                   f"{e(type(err).__name__)}: {e(err)}</p><figcaption>{e(role)}</figcaption></figure>")
        (target if i == len(refs) - 1 else inputs).append(fig)
    overlay = _overlay(refs, shown)
    arrow = '<span class="arrow">→</span>' if inputs else ""
    changed = f'<p class="changed">relabelled: {e(", ".join(changed_labels))}</p>' if changed_labels else ""
    base = str(prompt.get("base", ""))
    return (f'<article class="sample" id="{e(raw.key)}">{changed}'
            f'<div class="images">{"".join(inputs)}{arrow}{"".join(target)}{overlay}</div>'
            f'<p class="base" title="{e(base)}">{e(base)}</p>{_verdict(r.get("verify"))}'
            f"<details><summary>facts</summary>{_facts(raw.key, r)}</details></article>")


def _verdict(verdict: Any) -> str:
    """The judge's score of the instruction (issue 12), and the parts it found failing."""
    if not isinstance(verdict, dict) or "score" not in verdict:
        return ""
    fails = ", ".join(str(p) for p in verdict.get("failing_parts") or [])
    plausible = "" if verdict.get("plausible", True) else " · implausible"
    return (f'<p class="verdict">judge {e(_text(verdict["score"]))}/5{plausible}'
            + (f" · fails: {e(fails)}" if fails else "") + "</p>")


def _rejected_section(loc: Location, per_task: int, summary: PreviewSummary) -> str:
    """Up to `per_task` pairs the judge rejected, spread over the table by a hash of their keys (the
    same page for the same dataset): frames A → B, the instruction, the score and the failing parts."""
    keys = read_negatives(loc, ["pair_key"]).column("pair_key").to_pylist()
    summary.rejected = len(keys)
    head = '<section id="rejected"><h2>rejected by the judge</h2>'
    if not keys:
        return head + "<p>none (no judge, or it accepted every pair)</p></section>"
    chosen = sorted(keys, key=lambda k: hashlib.sha1(k.encode()).digest())[:per_task]
    rows = sorted(read_negatives(loc, pair_keys=chosen).to_pylist(), key=lambda r: r["pair_key"])
    cards = [_rejected_card(r) for r in rows]
    summary.rejected_shown = len(cards)
    info = (f"<p>{len(cards)} of {len(keys)} rejected pairs shown; all of them, with their frames and "
            f"verdicts: negatives/*.parquet</p>")
    style = f"grid-template-columns:repeat(auto-fill,minmax({2 * CARD_IMAGE_PX + 48}px,1fr))"
    return head + info + f'<div class="grid" style="{style}">' + "".join(cards) + "</div></section>"


def _rejected_card(r: dict[str, Any]) -> str:
    figures = []
    for role, member in (("A", "image_a"), ("B", "image_b")):
        try:
            figures.append(_figure(data_uri(viewable(r[member], ImageKind.rgb), ImageKind.rgb), role, "", None, member))
        except _READ_ERRORS as err:
            figures.append(f'<figure class="broken"><p class="error">cannot decode {member}: '
                           f"{e(type(err).__name__)}: {e(err)}</p><figcaption>{role}</figcaption></figure>")
    try:
        verdict = json.loads(r["verdict_json"] or "{}")
    except ValueError:
        verdict = {"score": r["score"]}
    source = " · ".join(f"{k} {e(_text(r[k]))}" for k in ("video_uri", "shot", "pair", "t_a_s", "t_b_s")
                        if r.get(k) is not None)
    return (f'<article class="sample rejected" id="rejected-{e(r["pair_key"])}">'
            f'<div class="images">{figures[0]}<span class="arrow">→</span>{figures[1]}</div>'
            f'<p class="base" title="{e(r["instruction"] or "")}">{e(r["instruction"] or "")}</p>'
            f"{_verdict(verdict)}<details><summary>verdict</summary>"
            f'<p class="key">{e(r["pair_key"])}</p><p class="source">{source}</p>'
            f'<p>{e(_text(verdict))}</p><p>judge {e(r["judge_json"] or "")}</p></details></article>')


def _overlay(refs: list[dict], shown: dict) -> str:
    """A decoded mask drawn over the scene it cuts out of: the canvas, else an RGB target."""
    bases = [r for r in refs if r.get("kind") == "rgb" and r.get("member") in shown and r.get("role") in ("canvas", "target")]
    bases.sort(key=lambda r: r.get("role") != "canvas")
    mask = next((r for r in refs if r.get("kind") == "mask" and r.get("member") in shown), None)
    if not (bases and mask):
        return ""
    rgb = overlay_mask(shown[bases[0]["member"]], shown[mask["member"]][..., 0])
    return _figure(data_uri(rgb, ImageKind.rgb), "overlay", "", None, f"{mask['member']} over {bases[0]['member']}")


def _figure(uri: str, role: str, label: str, href: str | None, member: str) -> str:
    img = f'<img src="{uri}" alt="{e(role)}: {e(member)}">'
    link = f'<a href="{e(href)}">{img}</a>' if href else img
    caption = e(role) + (f" · {e(label)}" if label else "")
    return f'<figure class="role-{e(role)}">{link}<figcaption>{caption}</figcaption></figure>'


def _facts(key: str, r: dict[str, Any]) -> str:
    prompt, s = r.get("prompt") or {}, r.get("source") or {}
    source = " · ".join(f"{k} {e(_text(s[k]))}" for k in ("video_uri", "shot", "pair", "frame_a", "frame_b",
                                                          "t_a_s", "t_b_s") if k in s)
    facts = "".join(f"<tr><th>{e(k)}</th><td>{e(_text(v))}</td></tr>" for k, v in sorted((r.get("facts") or {}).items()))
    prov = "".join(f"<tr><th>{e(stage)}</th><td>{e(_text(p.get('model_id', '?')))}</td>"
                   f"<td>{e(_text(p.get('revision', '?')))}</td><td>{e(_text(p.get('params', {})))}</td></tr>"
                   for stage, p in sorted((r.get("labels") or {}).items()) if isinstance(p, dict))
    other = "".join(f"<tr><th>{e(k)}</th><td>{e(_text(v))}</td></tr>" for k, v in sorted(r.items()) if k not in KNOWN_FIELDS)
    return (f'<p class="key">{e(key)}</p><p><b>context</b> {e(prompt.get("context", ""))}</p>'
            f'<p class="source">{source}</p>'
            + (f'<table class="facts"><caption>measured facts</caption>{facts}</table>' if facts else "")
            + (f'<table class="prov"><caption>provenance</caption>{prov}</table>' if prov else "")
            + (f'<table class="other"><caption>other fields</caption>{other}</table>' if other else ""))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


def _counts_table(counts: dict[str, int], shown: dict[str, int], specs: list[TaskSpec]) -> str:
    rows = "".join(f'<tr><td>{t.id}</td><td><a href="#task-{e(t.name)}">{e(t.name)}</a></td>'
                   f"<td>{counts.get(t.name, 0)}</td><td>{shown.get(t.name, 0)}</td></tr>" for t in specs)
    return ('<section id="counts"><h2>samples per task</h2><table><tr><th>id</th><th>task</th>'
            f"<th>in dataset</th><th>shown</th></tr>{rows}</table></section>")


def _stages_table(stages: dict[str, dict], groups: list[dict]) -> str:
    dropped: dict[str, list[str]] = {}
    for g in sorted(groups, key=lambda g: g["reason"]):
        dropped.setdefault(g["stage"], []).append(f"{g['reason']}={g['stage_count']}")
    names = list(stages) + [s for s in dropped if s not in stages]
    if not names:
        return ""
    rows = "".join(f"<tr><td>{e(s)}</td><td>{e(stages.get(s, {}).get('in', '-'))}</td>"
                   f"<td>{e(stages.get(s, {}).get('out', '-'))}</td><td>{e(', '.join(dropped.get(s, [])) or '-')}</td></tr>"
                   for s in names)
    return ('<section id="stages"><h2>stages</h2><table><tr><th>stage</th><th>in</th><th>out</th>'
            f"<th>dropped (by reason)</th></tr>{rows}</table></section>")


def _failures_section(groups: list[dict], total: int) -> str:
    if not total:
        return '<section id="failures"><h2>failures</h2><p>none</p></section>'
    rows = []
    for g in groups:
        examples = "".join(f"<li>{e(x['input_uri'] or '')}{' · ' + e(x['key']) if x['key'] else ''}"
                           f"{': ' + e(x['detail']) if x['detail'] else ''}</li>" for x in g["examples"])
        rows.append(f"<tr><td>{e(g['stage'])}</td><td>{e(g['reason'])}</td>"
                    f"<td>{e(REASONS.get(g['reason'], 'undeclared'))}</td><td>{g['stage_count']}</td>"
                    f'<td><ul class="examples">{examples}</ul></td></tr>')
    return ('<section id="failures"><h2>failures by reason</h2><p>all rows: failures/*.parquet</p><table>'
            "<tr><th>stage</th><th>reason</th><th>kind</th><th>rows</th><th>examples</th></tr>"
            f"{''.join(rows)}</table></section>")


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{margin:0 0 4px}h2{border-bottom:1px solid #ccc;padding-bottom:2px}
table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
.smoke{background:#ffd400;color:#000;font-weight:bold;font-size:20px;padding:10px;border:3px solid #000;margin:8px 0}
.grid{display:grid;gap:8px}
.sample{background:#fff;border:1px solid #ccc;border-radius:6px;padding:6px;min-width:0}
.images{display:flex;flex-wrap:wrap;gap:4px;align-items:center}
figure{margin:0;padding:2px;border:3px solid #999;border-radius:4px}
figure img{display:block;height:96px;width:auto;max-width:128px}
figcaption{font-size:11px;max-width:128px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.arrow{font-size:22px;color:#555}
.role-canvas{border-color:#2a7de1}.role-asset{border-color:#2ca02c}.role-control{border-color:#9467bd}
.role-target{border-color:#d62728}.role-overlay{border-color:#ff0060}
.verdict{margin:2px 0;font-size:12px;color:#555}
.base{margin:4px 0;display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;overflow:hidden}
details{font-size:12px}.key,.source{font-family:monospace;word-break:break-all;color:#555;margin:2px 0}
.facts caption,.prov caption,.other caption{text-align:left;font-weight:bold}
.examples{margin:0;padding-left:16px;font-size:12px;word-break:break-all}
.error{color:#b00020;font-weight:bold}.changed{color:#8a4b00;font-weight:bold;margin:0 0 4px}
"""
