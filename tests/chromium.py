"""Render a page in headless Chromium and report what a user would see: a screenshot and console errors.

Talks the DevTools protocol over `--remote-debugging-pipe` (JSON messages separated by NUL on
fds 3 and 4), so it needs nothing beyond the standard library and opens no port.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--remote-debugging-pipe"]
# images that failed to decode or load show up as complete with no natural size
BROKEN_IMAGES_JS = "[...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Rendered:
    screenshot_png: bytes
    console_errors: list[str] = field(default_factory=list)
    images: int = 0
    broken_images: int = 0
    values: dict = field(default_factory=dict)  # name -> the value of each JS expression in `probes`


class _DevTools:
    """One browser over the pipe; `call` returns a command's result and keeps the events it passed."""

    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int, timeout_s: float):
        self.proc, self.write_fd, self.read_fd = proc, write_fd, read_fd
        self.deadline = time.monotonic() + timeout_s
        self.events: list[dict] = []
        self._buf = b""
        self._next_id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        while not any(ev.get("method") == method for ev in self.events):
            self.events.append(self._read())
        return next(ev for ev in self.events if ev.get("method") == method)

    def _read(self) -> dict:
        while b"\0" not in self._buf:
            left_s = self.deadline - time.monotonic()
            if left_s <= 0 or not select.select([self.read_fd], [], [], left_s)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium exited (rc={self.proc.poll()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)


def _console_errors(events: list[dict]) -> list[str]:
    errors = []
    for ev in events:
        method, p = ev.get("method"), ev.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            errors.append("exception: " + p["exceptionDetails"].get("exception", {}).get("description", "?"))
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"log ({p['entry']['source']}): {p['entry']['text']}")
    return errors


def render(url: str, width_px: int = 1280, height_px: int = 1600, timeout_s: float = 60,
           probes: dict[str, str] | None = None) -> Rendered:
    """Load `url` in a fresh headless Chromium profile; screenshot the viewport once `load` fires.

    `probes` are JS expressions evaluated on the loaded page (e.g. layout checks); their
    JSON-able values come back in `Rendered.values`."""
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("chromium not installed (apt-get install chromium)")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def wire_fds():  # in the child: the protocol wants our pipes exactly on fds 3 (in) and 4 (out)
        high_in = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        high_out = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.dup2(high_in, 3)
        os.dup2(high_out, 4)

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=wire_fds, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        cdp = _DevTools(proc, to_child_w, from_child_r, timeout_s)
        try:
            target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                cdp.call(f"{domain}.enable", session=session)
            cdp.call("Emulation.setDeviceMetricsOverride", {"width": width_px, "height": height_px,
                                                             "deviceScaleFactor": 1, "mobile": False}, session)
            cdp.call("Page.navigate", {"url": url}, session)
            cdp.wait_event("Page.loadEventFired")
            counts = cdp.call("Runtime.evaluate", {"expression": f"[document.images.length, {BROKEN_IMAGES_JS}]",
                                                   "returnByValue": True}, session)["result"]["value"]
            values = {name: cdp.call("Runtime.evaluate", {"expression": js, "returnByValue": True},
                                     session)["result"].get("value") for name, js in (probes or {}).items()}
            shot = cdp.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
            cdp.call("Browser.close")
            proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.close(to_child_w)
            os.close(from_child_r)
    return Rendered(base64.b64decode(shot), _console_errors(cdp.events), images=counts[0], broken_images=counts[1],
                    values=values)
