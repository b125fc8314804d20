"""Expand the user's `--input` sources into a sorted, de-duplicated list of video URIs.

A source is a local directory (searched recursively), a glob, a list file (.txt with one
URI a line, .csv or .parquet with a `uri`/`path`/`video_uri` column, else the first
column), a single video file, or an object-storage prefix/glob (`s3://bucket/videos/`).
"""
from __future__ import annotations

import csv
import io
import posixpath
from typing import Iterable

import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from datagen import UserError

# Extensions searched for inside directories and prefixes (a list file or glob may name anything).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv", ".wmv", ".3gp")
LIST_EXTENSIONS = (".txt", ".csv", ".parquet")
URI_COLUMNS = ("video_uri", "uri", "path", "url")


def expand_sources(sources: str | Iterable[str], **storage_options) -> list[str]:
    """All video URIs named by `sources`; a source naming nothing raises UserError."""
    if isinstance(sources, str):
        sources = [sources]
    uris: list[str] = []
    for src in sources:
        found = _expand_one(str(src), storage_options)
        if not found:
            raise UserError(f"input {src!r} matches no video files")
        uris.extend(found)
    return list(dict.fromkeys(uris))


def _expand_one(src: str, storage_options: dict) -> list[str]:
    try:
        fs, path = url_to_fs(src, **storage_options)
    except (ImportError, ValueError) as e:
        raise UserError(f"cannot open input {src!r}: {e}") from None
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    local = proto in ("file", "local")

    def uri(p: str) -> str:
        return p if local else f"{proto}://{p}"

    if any(ch in path for ch in "*?["):
        return sorted(uri(p) for p in fs.glob(path) if fs.isfile(p))
    if fs.isdir(path):
        return sorted(uri(p) for p in fs.find(path) if p.lower().endswith(VIDEO_EXTENSIONS))
    if not fs.exists(path):
        raise UserError(f"input {src!r} does not exist; pass a video file, a directory, a glob, a list file or s3:// prefix")
    if path.lower().endswith(LIST_EXTENSIONS):
        base = posixpath.dirname(path)
        return [_resolve(u, base, uri) for u in _read_list(fs, path)]
    return [uri(path)]


def _resolve(entry: str, base: str, uri) -> str:
    """Relative entries of a list file are relative to the list file's folder."""
    if "://" in entry or entry.startswith("/"):
        return entry
    return uri(posixpath.join(base, entry))


def _read_list(fs, path: str) -> list[str]:
    if path.lower().endswith(".parquet"):
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        col = next((c for c in URI_COLUMNS if c in table.column_names), table.column_names[0])
        return [str(v) for v in table.column(col).to_pylist() if v]
    text = fs.cat_file(path).decode("utf-8")
    if path.lower().endswith(".csv"):
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            return []
        header = [h.strip() for h in rows[0]]
        col = next((header.index(c) for c in URI_COLUMNS if c in header), None)
        body = rows[1:] if col is not None else rows
        return [r[col or 0].strip() for r in body if r and r[col or 0].strip()]
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
