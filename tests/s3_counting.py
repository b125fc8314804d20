"""A real S3 API server (moto) behind a WSGI layer that counts what it serves.

Run as `python -m tests.s3_counting PORT`. Every request is counted by bucket and kind
(GET, HEAD, PUT, POST, DELETE, COPY, LIST for a bucket-level GET), also per object
extension ("PUT .tar"), with the bytes sent and received; `GET /_counts` returns the counts as JSON, `POST /_counts/reset` zeroes them, and
`POST /_populate?bucket=&prefix=&n=` fills a bucket with n tiny objects without n requests.
Clients use path-style URLs (botocore does for an IP endpoint), so the bucket is the first
path segment. Used by the S3 tests and bench/scale.py.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator
from urllib.request import Request, urlopen

COUNTS_PATH = "/_counts"
POPULATE_PATH = "/_populate"


class CountingApp:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == POPULATE_PATH:  # bench set-up: objects straight into moto's store, not counted
            from urllib.parse import parse_qs

            q = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
            _populate(q["bucket"], q["prefix"], int(q["n"]))
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        if path.startswith(COUNTS_PATH):
            with self.lock:
                if environ["REQUEST_METHOD"] == "POST":
                    self.counts.clear()
                body = json.dumps(self.counts).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        bucket, _, key = path.lstrip("/").partition("/")
        method = environ["REQUEST_METHOD"]
        kind = "LIST" if method == "GET" and not key else "COPY" if environ.get("HTTP_X_AMZ_COPY_SOURCE") else method
        received = int(environ.get("CONTENT_LENGTH") or 0)
        ext = key.rsplit(".", 1)[-1] if "." in key.rsplit("/", 1)[-1] else ""
        with self.lock:
            c = self.counts[bucket]
            c[kind] += 1
            c[f"{kind} .{ext}"] += 1  # e.g. "PUT .tar": requests per kind of object
            c["bytes_in"] += received
        out = self.app(environ, start_response)
        return self._count_out(out, bucket)

    def _count_out(self, chunks, bucket: str) -> Iterator[bytes]:
        try:
            for chunk in chunks:
                with self.lock:
                    self.counts[bucket]["bytes_out"] += len(chunk)
                yield chunk
        finally:
            close = getattr(chunks, "close", None)
            if close:
                close()


def _populate(bucket: str, prefix: str, n: int) -> None:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for i in range(n):
        backend.put_object(bucket, f"{prefix}{i:08d}.mp4", b"x", disable_notification=True)


def populate(endpoint: str, bucket: str, prefix: str, n: int) -> None:
    """Create `n` one-byte objects `{prefix}{i:08d}.mp4` in an existing bucket, fast (no HTTP per object)."""
    with urlopen(Request(f"{endpoint}{POPULATE_PATH}?bucket={bucket}&prefix={prefix}&n={n}", method="POST", data=b""),
                 timeout=600) as r:
        r.read()


def serve(port: int) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler).serve_forever()


def counts(endpoint: str, reset: bool = False) -> dict[str, dict[str, int]]:
    req = Request(endpoint + COUNTS_PATH, method="POST" if reset else "GET", data=b"" if reset else None)
    with urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@contextmanager
def counting_s3_server(port: int) -> Iterator[str]:
    """Start the server in its own process; yields its endpoint URL."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.s3_counting", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:  # until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the counting S3 server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
