"""Every failure reason any stage can emit is declared in schemas/reasons.py, with its kind.

Reasons are found in the source: the reason argument of `fail(...)` and `mark_failed(...)`,
of `VideoError(...)` and `Verdict(...)`, a `{"reason": ...}` or `FAILED_REASON: ...` entry, and
string constants assigned to a name `reason` or as the first of a `last_error[i]` pair, and
what `failure_reason(e, default)` may return. A reason passed on from a variable must come
from one of those, so the scan covers it.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from schemas.reasons import PERMANENT, REASONS, TRANSIENT, kind_of

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(p for d in ("stages", "datagen") for p in (ROOT / d).rglob("*.py"))
# call -> index of its reason argument
REASON_ARG = {"fail": 2, "mark_failed": 3, "VideoError": 0, "Verdict": 1}
FORWARDED = {"e.reason", "reason", "verdict.reason", "f['reason']", "row.get(C.FAILED_REASON)", "f[C.FAILED_REASON]"}


def _strings(node: ast.AST) -> list[str]:
    """The string constants an expression can evaluate to (both arms of a conditional)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    return []


def emitted_reasons(source: str, where: str = "<source>") -> tuple[set[str], list[str]]:
    """(reason strings found, expressions passed as reasons that the scan cannot follow)."""
    found, unknown = set(), []

    def take(node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and node.value is None:  # a healthy row: no reason
            return
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "failure_reason":
            take(node.args[1])  # its default; what it may return instead is found in its body
            return
        strings = _strings(node)
        if strings:
            found.update(strings)
        elif ast.unparse(node) not in FORWARDED:
            unknown.append(f"{where}:{node.lineno}: {ast.unparse(node)}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in REASON_ARG and len(node.args) > REASON_ARG[name]:
                take(node.args[REASON_ARG[name]])
            for kw in node.keywords:
                if kw.arg in ("reason", "failed_reason") and name not in ("Verdict",):
                    take(kw.value)
        elif isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values):
                key = ast.unparse(k) if k is not None else ""
                if key in ("'reason'", "C.FAILED_REASON", "FAILED_REASON", "'failed_reason'"):
                    take(v)
        elif isinstance(node, ast.FunctionDef) and node.name == "failure_reason":  # stages/base.py
            found.update(r.value.value for r in ast.walk(node) if isinstance(r, ast.Return) and _strings(r.value))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "reason" for t in node.targets):
            found.update(_strings(node.value))
        elif (isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)  # caption: last_error[i] = (reason, detail)
              and any(isinstance(t, ast.Subscript) and ast.unparse(t.value) == "last_error" for t in node.targets)):
            take(node.value.elts[0])
    return found, unknown


def test_every_emitted_reason_is_declared():
    found, unknown = set(), []
    for path in SOURCES:
        f, u = emitted_reasons(path.read_text(), str(path.relative_to(ROOT)))
        found |= f
        unknown += u
    assert not unknown, f"reasons the scan cannot follow (use a literal or add the source): {unknown}"
    assert found, "the scan found no reasons at all: it is broken"
    undeclared = sorted(found - set(REASONS))
    assert not undeclared, f"declare these in schemas/reasons.py (permanent or transient): {undeclared}"
    stale = sorted(set(REASONS) - found)
    assert not stale, f"declared but emitted nowhere (remove them, or the scan misses a source): {stale}"


def test_the_scan_catches_a_new_undeclared_reason():
    found, _ = emitted_reasons('def f(row):\n    return fail(row, "caption", "gpu_on_fire", "detail")\n')
    assert found == {"gpu_on_fire"} and "gpu_on_fire" not in REASONS
    found, unknown = emitted_reasons('x = {C.FAILED_REASON: "a" if ok else "b"}\nfail(row, s, why, d)\n')
    assert found == {"a", "b"} and unknown == ["<source>:2: why"]


def test_kinds_are_the_two_declared_ones_and_the_world_failing_is_transient():
    assert set(REASONS.values()) == {PERMANENT, TRANSIENT}
    for reason in ("backend_error", "out_of_memory", "storage_error"):
        assert kind_of(reason) == TRANSIENT
    for reason in ("not_a_video", "no_pairs", "invalid_json"):
        assert kind_of(reason) == PERMANENT
    with pytest.raises(KeyError, match="not declared"):
        kind_of("made_up")
