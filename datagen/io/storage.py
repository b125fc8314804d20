"""One place that knows about local paths vs object storage (fsspec)."""
from __future__ import annotations

import fcntl
import hashlib
import io
import os
import posixpath
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Iterator

import fsspec
from fsspec.core import url_to_fs

from datagen import UserError

SINGLE_PUT_MIN_BLOCK_BYTES = 5 * 2**20  # S3's smallest multipart block; s3fs refuses smaller ones


@dataclass(frozen=True)
class Location:
    """A dataset root: a filesystem plus a root path inside it."""

    fs: fsspec.AbstractFileSystem
    root: str  # protocol-less path as the filesystem wants it
    url: str  # what the user gave (for messages and URLs handed to other readers)

    @classmethod
    def parse(cls, url: str, **storage_options) -> "Location":
        url = str(url)
        try:
            fs, root = url_to_fs(url, **storage_options)
        except (ImportError, ValueError) as e:
            raise UserError(f"cannot open {url!r}: {e}") from None
        return cls(fs, root.rstrip("/") or "/", url.rstrip("/"))

    @classmethod
    def dataset(cls, url: str) -> "Location":
        """An existing dataset directory; one clear line when there is none."""
        loc = cls.parse(url)
        if not loc.exists(""):
            raise UserError(f"dataset {url!r} not found; pass the --output directory of a run")
        return loc

    @property
    def is_local(self) -> bool:
        return "file" in _protocols(self.fs)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def url_of(self, rel: str) -> str:
        """A URL another library can open (e.g. webdataset, datasets)."""
        if self.is_local:
            return self.path(rel)
        return f"{_protocols(self.fs)[0]}://{self.path(rel)}"

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def glob(self, pattern: str) -> list[str]:
        """Paths relative to the root, sorted. Always a fresh listing: fsspec caches object-store
        listings per process, and other processes (Ray workers) write here."""
        if not self.is_local:
            self.fs.invalidate_cache()
        base = self.root.rstrip("/") + "/"
        return sorted(p[len(base):] if p.startswith(base) else p for p in self.fs.glob(self.path(pattern)))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def open(self, rel: str, mode: str = "rb") -> IO:
        return self.open_abs(self.path(rel), mode)

    def open_abs(self, path: str, mode: str = "rb") -> IO:
        # builtin open for local files: fsspec's local wrapper costs ~30% of shard throughput
        return open(path, mode) if self.is_local else self.fs.open(path, mode)

    def makedirs(self, rel: str = "") -> None:
        if self.is_local:
            self.fs.makedirs(self.path(rel), exist_ok=True)

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def size(self, rel: str) -> int:
        return int(self.fs.size(self.path(rel)))

    def stage(self, rel: str) -> "StagedWrite":
        """A file to write that appears under `rel` only on `commit()` (see StagedWrite)."""
        return StagedWrite(self, rel)

    @contextmanager
    def atomic_write(self, rel: str) -> Iterator[IO]:
        """Readers never see a partial file under `rel`: it appears when the block finishes cleanly."""
        staged = self.stage(rel)
        try:
            yield staged.file
            staged.commit()
        except BaseException:
            staged.abort()
            raise

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.atomic_write(rel) as f:
            f.write(data)


class StagedWrite:
    """One file written in full, then made visible at once.

    Local disk: a temporary name in the same folder, renamed (atomic) on commit. Object
    stores: the bytes are buffered and uploaded on commit with one PUT, which S3 (and GCS,
    Azure) make visible atomically, so no temporary object, copy and delete (3 requests and
    twice the bytes) are needed. The buffer holds what the writer already holds in rows: a
    shard is bounded by ShardLimits.max_bytes, far under the 5 GB of one PUT.
    """

    def __init__(self, loc: Location, rel: str):
        self.loc, self.final = loc, loc.path(rel)
        if loc.is_local:
            self.tmp = f"{self.final}.tmp-{uuid.uuid4().hex[:12]}"
            loc.makedirs(posixpath.dirname(rel))
            self.file: IO = open(self.tmp, "wb")
        else:
            self.file = io.BytesIO()

    def commit(self) -> None:
        if self.loc.is_local:
            self.file.close()
            os.replace(self.tmp, self.final)
            return
        data = self.file.getvalue()
        self.file.close()
        # a block size above the object's size: fsspec's buffered writers upload it in one request
        with self.loc.fs.open(self.final, "wb", block_size=max(len(data) + 1, SINGLE_PUT_MIN_BLOCK_BYTES)) as f:
            f.write(data)

    def abort(self) -> None:
        self.file.close()
        if self.loc.is_local:
            try:
                os.remove(self.tmp)
            except FileNotFoundError:
                pass


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)


# --- videos on object storage: fetched once per node, shared by the stages that read them ---
FETCH_DIR_ENV, FETCH_BYTES_ENV = "DATAGEN_FETCH_DIR", "DATAGEN_FETCH_CACHE_BYTES"
# room for a few long videos in flight per node; beyond it the least recently used idle ones go
DEFAULT_FETCH_CACHE_BYTES = 16 * 2**30


def _fetch_dir() -> str:
    d = os.environ.get(FETCH_DIR_ENV) or os.path.join(tempfile.gettempdir(), f"datagen-fetch-{os.getuid()}")
    os.makedirs(d, exist_ok=True)
    return d


@contextmanager
def fetched(uri: str, **storage_options) -> Iterator[str]:
    """A local path for `uri`. Object-storage files are downloaded once into a node-local
    cache and shared by every stage and worker process on the node that asks for the same
    object (ingest, shots and pairs of one video, fused or not), so a video's bytes cross
    the network once per run. An entry in use is never evicted (shared flock); idle ones
    leave least-recently-used first once the cache passes DATAGEN_FETCH_CACHE_BYTES.
    """
    fs, path = url_to_fs(uri, **storage_options)
    if "file" in _protocols(fs):
        yield path
        return
    info = fs.info(path)  # FileNotFoundError for a missing object, as on disk
    version = f"{uri}\0{info.get('size')}\0{info.get('ETag') or info.get('etag') or info.get('mtime') or ''}"
    entry = os.path.join(_fetch_dir(), hashlib.sha1(version.encode()).hexdigest()[:24] + posixpath.splitext(path)[1])
    with open(entry + ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per entry; the others wait for it
        if not os.path.exists(entry):
            part = f"{entry}.part-{uuid.uuid4().hex[:8]}"
            try:
                fs.get_file(path, part)
                os.replace(part, entry)
            finally:
                if os.path.exists(part):
                    os.remove(part)
        os.utime(entry)  # recency for eviction
        fcntl.flock(lock, fcntl.LOCK_SH)  # readers share; an evictor needs it exclusive
        try:
            yield entry
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _evict(int(os.environ.get(FETCH_BYTES_ENV, DEFAULT_FETCH_CACHE_BYTES)))


def _evict(max_bytes: int) -> None:
    d = _fetch_dir()
    entries = []
    for name in os.listdir(d):
        if name.endswith(".lock") or ".part-" in name:
            continue
        try:
            st = os.stat(os.path.join(d, name))
        except FileNotFoundError:
            continue
        entries.append((st.st_mtime, st.st_size, os.path.join(d, name)))
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries):
        if total <= max_bytes:
            return
        with open(entry + ".lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # in use by some stage: stays
            try:
                os.remove(entry)
                total -= size
            except FileNotFoundError:
                pass
