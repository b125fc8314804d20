"""Fault injection that runs inside Ray workers (so it lives in an importable module)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from datagen.pipeline.sink import DatasetSink


def claim_kill(marker_dir: str, kills: int) -> bool:
    """True for the first `kills` callers over all processes: each creates one marker file."""
    for n in range(kills):
        try:
            os.close(os.open(Path(marker_dir) / f"kill-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            continue
    return False


class DyingSink(DatasetSink):
    """The real sink, whose worker SIGKILLs itself on the second row of a write (after the
    first pair's shards are committed, before the commit record), `kills` times in all."""

    def __init__(self, *args, marker_dir: str, kills: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker_dir, self.kills = marker_dir, kills

    def rows_of(self, tables):
        for i, row in enumerate(super().rows_of(tables)):
            if i == 1 and claim_kill(self.marker_dir, self.kills):
                os.kill(os.getpid(), signal.SIGKILL)
            yield row


def pid_of_client(port: int) -> int | None:
    """The process on this machine whose TCP socket has local port `port`."""
    for c in psutil.net_connections("tcp"):
        if c.laddr and c.laddr.port == port and c.pid:
            return c.pid
    return None
