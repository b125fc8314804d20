"""One place that knows about local paths vs object storage (fsspec)."""
from __future__ import annotations

import os
import posixpath
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Iterator

import fsspec
from fsspec.core import url_to_fs

from datagen import UserError


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
        """Paths relative to the root, sorted."""
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

    @contextmanager
    def atomic_write(self, rel: str) -> Iterator[IO]:
        """Write to a temporary name, rename to `rel` only when the block finishes cleanly.

        Readers never see a partial file under the final name. On object stores the
        upload of the final object is itself atomic; the rename keeps one code path.
        """
        final = self.path(rel)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:12]}"
        self.makedirs(posixpath.dirname(rel))
        f = self.open_abs(tmp, "wb")
        try:
            yield f
            f.close()
            self.rename_abs(tmp, final)
        except BaseException:
            f.close()
            try:
                self.fs.rm_file(tmp)
            except (FileNotFoundError, OSError):
                pass
            raise

    def rename_abs(self, src: str, dst: str) -> None:
        """Rename between two absolute paths of this filesystem (atomic on local disks)."""
        if self.is_local:
            os.replace(src, dst)
        else:
            self.fs.mv(src, dst)

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.atomic_write(rel) as f:
            f.write(data)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    p = fs.protocol
    return (p,) if isinstance(p, str) else tuple(p)
