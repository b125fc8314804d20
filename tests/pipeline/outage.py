"""A TCP proxy in front of a real server that can go down and come back on the same port."""
from __future__ import annotations

import re
import socket
import threading
from typing import Callable

_REQUEST = re.compile(rb"^(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.[01]\r\n")


class Outage:
    """127.0.0.1:port -> upstream. `stop()` refuses new connections and cuts live ones;
    `start()` serves again. `down_after(test)` stops it as soon as a forwarded request
    (method, path) passes `test`: the outage is set by the proxy's own request counter."""

    def __init__(self, upstream_port: int, port: int):
        self.upstream_port, self.port = upstream_port, port
        self.requests: list[tuple[str, str]] = []
        self.down_after: Callable[[str, str], bool] | None = None
        self.stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._live: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.stopped.clear()
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            live, self._live = self._live, set()
        if listener is not None:
            listener.close()
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.stopped.set()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed by stop()
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:  # the server itself is not there: the client sees a cut connection
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._live |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
                m = _REQUEST.match(data) if from_client else None
                if m:
                    method, path = m.group(1).decode(), m.group(2).decode()
                    self.requests.append((method, path))
                    if self.down_after is not None and self.down_after(method, path):
                        self.down_after = None
                        self.stop()
                        return
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
