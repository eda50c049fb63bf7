"""The dashboard of a running engine, fed by the engine itself.

The engine gives it a tape of its own (``WorkflowEngine.attach_tape``: one list append per
finished task, failures and cancellations as they happen). Twice a second, on the engine's
loop, :class:`LiveFeed` moves what the tape holds into the :class:`~.aggregate.Aggregator`,
counts the unfinished tasks by state in one pass (the oldest running ones are kept for the
stragglers' table), samples the node (psutil), and writes the page's state to a file of a
private folder; a server process of its own (:mod:`.process`, handed the listening socket)
serves it. The campaign pays about a microsecond per task and a pass over the unfinished
records twice a second; no telemetry log is needed, and HTTP never takes its GIL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

from ..events import EventType
from ..tasks import TaskKind, TaskState
from .aggregate import RUNNING_SHOWN, Aggregator
from .process import TOKEN_ENV
from .server import listen, url_of

__all__ = ["LiveFeed"]

log = logging.getLogger("asyncflow_hpc.dashboard")

TICK = 0.5  # seconds between updates of the page's state
BACKENDS_EVERY = 10  # ticks between reads of the backends' descriptions (a pilot's state)
_ENDS = {EventType.FAILED: "failed", EventType.CANCELED: "cancelled"}
_RUNNING, _BLOCK = TaskState.RUNNING, TaskKind.BLOCK


def _error_text(error: BaseException | None) -> tuple[str | None, str | None]:
    if error is None:
        return None, None
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - an exception that cannot print itself
        text = "<unprintable>"
    return type(error).__name__, text


class LiveFeed:
    """The dashboard add-on of one engine (closed by the engine at shutdown)."""

    def __init__(self, engine: Any, host: str, port: int, token: str) -> None:
        self.engine = engine
        self.aggregator = agg = Aggregator()
        backends = {n: _describe(b) for n, b in engine.backends.items()}
        default = getattr(engine, "_default_backend", None)
        agg.session_started(engine.uid, time.time(), getattr(default, "name", None),
                            socket.gethostname(), backends)
        self._ticks = 0
        self._warned = False
        self._process = _node_probe()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.sock = listen(host, port)  # OSError: the caller says which address
        self.url = url_of(self.sock, token)
        self._dir = tempfile.mkdtemp(prefix="asyncflow-hpc-dashboard-")  # 0700
        self._state_path = os.path.join(self._dir, "state.json")
        self.tape, self._detach = engine.attach_tape(self._on_rare, self._drain, limit=8192)
        self._tick()  # a first state before the first request
        self.server: subprocess.Popen | None = None
        try:
            self.server = self._spawn(token)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, token: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "asyncflow_hpc.dashboard.process", "--fd",
             str(self.sock.fileno()), "--state", self._state_path, "--parent", str(os.getpid())],
            pass_fds=(self.sock.fileno(),), env={**os.environ, TOKEN_ENV: token},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)


    # ------------------------------------------------------------------ from the engine
    def _on_rare(self, etype: str, rec: Any, error: BaseException | None, at: float) -> None:
        """A failure or cancellation, before the record changes (retries are not ends)."""
        state = _ENDS.get(etype)
        if state is None:
            return
        try:
            kind, text = _error_text(error)
            started = rec.started if rec.state is _RUNNING else None
            self.aggregator.task_ended(rec.uid, rec.name, rec.workflow_id, rec.node, state,
                                       started, at, rec.kind is _BLOCK, kind, text)
        except Exception:  # noqa: BLE001 - the page must never break the run
            pass

    def _drain(self) -> None:
        tape = self.tape
        if tape:
            self.aggregator.tasks_done(tape)
            tape.clear()

    def _tick(self) -> None:
        """On the engine's loop: the tape, the counts, the oldest running tasks, a node
        sample, the backends now and then, and the encoded state."""
        now = time.time()
        try:
            self._drain()
            tasks, blocks, oldest = _unfinished(self.engine, now)
            agg = self.aggregator
            self._ticks += 1
            backends = None
            if self._ticks % BACKENDS_EVERY == 0:
                backends = {n: _describe(b) for n, b in self.engine.backends.items()}
            agg.progress(now, tasks, blocks, backends)
            agg.running = oldest
            if self._process is not None and self._ticks % 2 == 1:
                agg.sample(socket.gethostname(), now, *self._process())
            self._write_state(json.dumps(agg.snapshot(now), separators=(",", ":")).encode())
        except Exception:  # noqa: BLE001 - the page must never break the run
            if not self._warned:
                self._warned = True
                log.warning("dashboard: the page's state could not be made", exc_info=True)
        if self._dir is not None:
            self._timer = self._loop.call_later(TICK, self._tick)

    def _write_state(self, data: bytes) -> None:
        """The state file, replaced whole (the server never reads half of one)."""
        tmp = self._state_path + ".new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                     0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self._state_path)

    async def close(self) -> None:
        from .._threads import in_thread

        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._tick()  # the last state, for a page still open until the server ends
        await in_thread(self.stop)

    def stop(self) -> None:
        """End the server process, remove the state and the socket (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._detach()
        proc = self.server
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.sock.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _describe(backend: Any) -> dict[str, Any]:
    try:
        return backend.describe()
    except Exception:  # noqa: BLE001 - a backend's bug: its name is enough
        return {"name": getattr(backend, "name", "?")}


def _unfinished(engine: Any, now: float) -> tuple[dict, dict, dict[str, tuple]]:
    """One pass over the unfinished records: tasks' and blocks' counts by state (the
    finished ones from the engine's counters), and the tasks running for more than a second,
    oldest first (at most what the page shows)."""
    running = pending = b_running = b_pending = 0
    oldest: dict[str, tuple] = {}
    for rec in engine.active_records():  # oldest first
        if rec.kind is _BLOCK:
            if rec.state is _RUNNING:
                b_running += 1
            else:
                b_pending += 1
        elif rec.state is _RUNNING:
            running += 1
            started = rec.started
            if len(oldest) < RUNNING_SHOWN and started and now - started >= 1.0:
                oldest[rec.uid] = (rec.name, started, rec.node)
        else:
            pending += 1
    c, b = engine.counts, engine.block_counts
    tasks = {"pending": pending, "running": running, "done": c["done"], "failed": c["failed"],
             "cancelled": c["cancelled"]}
    blocks = {"pending": b_pending, "running": b_running, "done": b["done"],
              "failed": b["failed"], "cancelled": b["cancelled"]}
    return tasks, blocks, oldest


def _node_probe() -> Any:
    """``() -> (cpu %, memory %)`` of this node, or None without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    psutil.cpu_percent(None)  # the first call only starts the measurement
    return lambda: (psutil.cpu_percent(None), psutil.virtual_memory().percent)
