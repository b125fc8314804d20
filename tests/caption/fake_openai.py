"""A stdlib HTTP server speaking OpenAI chat completions, answering by a script, for backend tests."""
from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# script(body, call_number_for_this_case) -> (status, content); two statuses that are not
# HTTP: DROP closes the connection without an answer, HANG answers nothing until the server
# stops (the client's timeout fires)
Script = Callable[[dict, int], tuple[int, str]]
DROP, HANG = 0, -1


class FakeOpenAI:
    def __init__(self, script: Script, case_of: Callable[[dict], str]):
        self.script, self.case_of = script, case_of
        self.bodies: list[dict] = []
        self.calls: dict[str, int] = {}
        self.in_flight = self.max_in_flight = 0
        self.gate: threading.Barrier | None = None  # set to make handlers wait for each other
        self.stopping = threading.Event()  # releases HANG handlers
        self.requests = 0  # over all cases: the counter a fault window is set by
        self.on_request: Callable[[int, int], None] | None = None  # (request number, client port), e.g. to kill it
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.bodies.append(body)
                    case = fake.case_of(body)
                    n = fake.calls[case] = fake.calls.get(case, 0) + 1
                    fake.requests += 1
                    total = fake.requests
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                if fake.on_request is not None:
                    fake.on_request(total, self.client_address[1])
                try:
                    if fake.gate is not None:
                        fake.gate.wait(timeout=10)
                except threading.BrokenBarrierError:
                    pass
                status, content = fake.script(body, n)
                with fake._lock:
                    fake.in_flight -= 1
                if status == HANG:
                    fake.stopping.wait()
                if status in (DROP, HANG):
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:  # the client gave up first
                        pass
                    return
                reply = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
                data = json.dumps(reply if status == 200 else {"error": content}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
