"""The user's `--input` sources as pages of video URIs, streamed into Ray Data.

A source is a local directory (searched recursively), a glob, a list file (.txt with one
URI a line, .csv or .parquet with a `uri`/`path`/`video_uri` column, else the first
column), a single video file, or an object-storage prefix/glob (`s3://bucket/videos/`).

`SourceListing` is a Ray Data datasource: one read task per source lists it page by page
(directories walked, S3 prefixes listed with ListObjectsV2 pages, list files read in
record batches), so a million-video corpus never sits in one list, and never in the
driver. The driver only checks that each source exists and names at least one video.
`expand_sources` is the in-memory form for small inputs (tests, benches, one-off tools).
"""
from __future__ import annotations

import csv
import io
import os
import posixpath
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from datagen import UserError

# Extensions searched for inside directories and prefixes (a list file or glob may name anything).
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".flv", ".wmv", ".3gp")
LIST_EXTENSIONS = (".txt", ".csv", ".parquet")
URI_COLUMNS = ("video_uri", "uri", "path", "url")
PAGE_ROWS = 1000  # one S3 ListObjectsV2 page; a block of this many URIs is a few tens of kB
SOURCE_POS = "source_pos"  # "{source index}:{row index}": where a URI was listed (repeat listings are dropped)


def expand_sources(sources: str | Iterable[str], **storage_options) -> list[str]:
    """All video URIs named by `sources` (directories and globs sorted); a source naming nothing raises UserError."""
    if isinstance(sources, str):
        sources = [sources]
    uris: list[str] = []
    for src in sources:
        found = [u for page in iter_source_pages(str(src), storage_options) for u in page]
        if not found:
            raise UserError(f"input {src!r} matches no video files")
        uris.extend(found if _is_list_file(str(src)) else sorted(found))
    return list(dict.fromkeys(uris))


def check_sources(sources: Iterable[str], storage_options: dict[str, Any]) -> list[str]:
    """Fail fast on the driver (one line per bad source) while reading at most one page of each."""
    sources = [str(s) for s in sources]
    for src in sources:
        if not next(iter(iter_source_pages(src, storage_options)), None):
            raise UserError(f"input {src!r} matches no video files")
    return sources


def _is_list_file(src: str) -> bool:
    return src.lower().endswith(LIST_EXTENSIONS) and not any(ch in src for ch in "*?[")


def _open_fs(src: str, storage_options: dict):
    try:
        fs, path = url_to_fs(src, **storage_options)
    except (ImportError, ValueError) as e:
        raise UserError(f"cannot open input {src!r}: {e}") from None
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return fs, path, proto in ("file", "local"), proto


def iter_source_pages(src: str, storage_options: dict) -> Iterator[list[str]]:
    """Non-empty pages of the URIs `src` names, in listing order."""
    fs, path, local, proto = _open_fs(src, storage_options)

    def uri(p: str) -> str:
        return p if local else f"{proto}://{p}"

    if any(ch in path for ch in "*?["):
        pages = _pages(uri(p) for p in fs.glob(path) if fs.isfile(p))
    elif not local and hasattr(fs, "_iterdir") and not path.lower().endswith(VIDEO_EXTENSIONS + LIST_EXTENSIONS):
        # an S3 prefix: listed straight away (an isdir check would list the whole prefix once more)
        pages = _pages(uri(p) for p in _s3_keys(fs, path) if p.lower().endswith(VIDEO_EXTENSIONS))
    elif fs.isdir(path):
        pages = _pages(uri(p) for p in _walk(fs, path, local) if p.lower().endswith(VIDEO_EXTENSIONS))
    elif not fs.exists(path):
        raise UserError(f"input {src!r} does not exist; pass a video file, a directory, a glob, a list file or s3:// prefix")
    elif path.lower().endswith(LIST_EXTENSIONS):
        base = posixpath.dirname(path)
        pages = _pages(_resolve(u, base, uri) for u in _read_list(fs, path))
    else:
        pages = iter([[uri(path)]])
    yield from pages


def _pages(uris: Iterable[str]) -> Iterator[list[str]]:
    page: list[str] = []
    for u in uris:
        page.append(u)
        if len(page) >= PAGE_ROWS:
            yield page
            page = []
    if page:
        yield page


def _walk(fs, path: str, local: bool) -> Iterator[str]:
    """Every file under `path`, one directory (local) or one listing page (S3) at a time."""
    if local:
        for d, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                yield os.path.join(d, f)
        return
    yield from fs.find(path)


def _s3_keys(fs, path: str) -> Iterator[str]:
    """Keys under an S3 prefix, one ListObjectsV2 page (1000 keys) per request, no delimiter (recursive)."""
    from fsspec.asyn import sync

    bucket, _, prefix = path.partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    listing = fs._iterdir(bucket, delimiter="", prefix=prefix)

    async def next_page():
        out = []
        try:
            while len(out) < PAGE_ROWS:
                out.append((await listing.__anext__())["name"])
        except StopAsyncIteration:
            pass
        return out

    while page := sync(fs.loop, next_page):
        yield from page


def _resolve(entry: str, base: str, uri) -> str:
    """Relative entries of a list file are relative to the list file's folder."""
    if "://" in entry or entry.startswith("/"):
        return entry
    return uri(posixpath.join(base, entry))


def _read_list(fs, path: str) -> Iterator[str]:
    """The entries of a list file, read a record batch (or a line) at a time."""
    with fs.open(path, "rb") as f:
        if path.lower().endswith(".parquet"):
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            col = next((c for c in URI_COLUMNS if c in names), names[0])
            for batch in pf.iter_batches(columns=[col], batch_size=PAGE_ROWS):
                yield from (str(v) for v in batch.column(0).to_pylist() if v)
            return
        text = io.TextIOWrapper(f, encoding="utf-8")
        if path.lower().endswith(".csv"):
            rows = csv.reader(text)
            header = [h.strip() for h in next(rows, [])]
            col = next((header.index(c) for c in URI_COLUMNS if c in header), None)
            body = rows if col is not None else _prepend(header, rows)
            for r in body:
                if len(r) > (col or 0) and r[col or 0].strip():
                    yield r[col or 0].strip()
            return
        for ln in text:
            if ln.strip() and not ln.lstrip().startswith("#"):
                yield ln.strip()


def _prepend(first: list[str], rows: Iterator[list[str]]) -> Iterator[list[str]]:
    if first:
        yield first
    yield from rows


class SourceListing:
    """Ray Data datasource over the user's sources: rows of `video_uri` and `source_pos`."""

    def __init__(self, sources: list[str], storage_options: dict[str, Any]):
        self.sources, self.storage_options = list(sources), dict(storage_options)

    def dataset(self, rows_per_block: int):
        """Blocks of `rows_per_block` URIs: Ray merges a read task's pages into blocks of up to
        128 MB (a million URIs), and one block is one ingest task, so the listing is re-cut,
        streaming, into blocks of one ingest batch; each later stage then gets that many videos
        per task, as from a list of sources."""
        import ray
        from ray.data import Datasource, ReadTask
        from ray.data.block import BlockMetadata

        sources, opts = self.sources, self.storage_options

        class _Listing(Datasource):
            def estimate_inmemory_data_size(self):
                return None

            def get_read_tasks(self, parallelism: int, **_) -> list:
                def read(i: int, src: str):
                    row = 0
                    for page in iter_source_pages(src, opts):
                        yield pa.table({"video_uri": page, SOURCE_POS: [f"{i}:{row + j}" for j in range(len(page))]})
                        row += len(page)

                meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
                return [ReadTask(lambda i=i, src=src: read(i, src), meta) for i, src in enumerate(sources)]

        listing = ray.data.read_datasource(_Listing(), override_num_blocks=max(1, len(sources)))
        return listing.repartition(target_num_rows_per_block=rows_per_block)
