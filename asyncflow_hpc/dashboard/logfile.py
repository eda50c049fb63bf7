"""A dashboard of a telemetry log, written by this process or another (``asyncflow-hpc
dashboard EVENTS.jsonl``): the follower reads what was appended, the aggregator keeps the
page's data, the server thread serves it."""

from __future__ import annotations

import asyncio
import json
import os
import time

from .aggregate import Aggregator
from .follow import LogFollower
from .server import DashboardServer, ServerThread

__all__ = ["LogDashboard"]

POLL = 0.5  # seconds between reads of the log


class LogDashboard:
    """Serve the page of ``log_path`` at ``host:port``; :attr:`url` has the token."""

    def __init__(self, log_path: str | os.PathLike[str], host: str, port: int,
                 token: str) -> None:
        self.aggregator = Aggregator()
        self.follower = LogFollower(log_path, self.aggregator.feed, on_reset=self._reset)
        self.thread = ServerThread(DashboardServer(token, self._state), host, port, self._follow)
        self.url = self.thread.url

    def _reset(self) -> None:  # the file was replaced: a new run, new counts
        self.aggregator = Aggregator()
        self.follower.on_line = self.aggregator.feed

    def _state(self) -> bytes:
        return json.dumps(self.aggregator.snapshot(time.time()), separators=(",", ":")).encode()

    async def _follow(self) -> None:
        """On the server's loop: read the log as it grows, a slice at a time."""
        while True:
            self.follower.poll()
            await asyncio.sleep(0 if self.follower.behind else POLL)

    def close(self) -> None:
        self.thread.close()
