"""The telemetry worker on a thread of the campaign's process, where there is no process.

Used when the process may use one CPU only, with ``ASYNCFLOW_HPC_TELEMETRY_WRITER=thread``,
when no worker process can be started, and with an OpenTelemetry bridge (whose spans must be
made in this process: they are replayed from the translator's span lines). It runs the same
:class:`.worker.Worker` — the one translator — fed through a queue instead of a pipe, and
takes the resource samples itself. It translates what came in once a ``PACE`` (or when much
is waiting), not as it comes: on a thread it takes turns with the event loop for the GIL,
and a burst of short tasks should finish first.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .worker import Worker
from .writer import open_log

__all__ = ["ThreadWorker"]

log = logging.getLogger("asyncflow_hpc.telemetry")

_STOP, _SAMPLE = object(), object()
PACE = 1.0  # seconds between translations while messages come in
MAX_WAITING = 64  # ... or sooner when this many wait (a batch holds up to 2048 tasks)


class ThreadWorker:
    """The same interface as :class:`.writer.WorkerProcess`: ``send`` messages, ``close``."""

    def __init__(self, path: str, init: dict, *, sample: Callable[[], tuple] | None = None,
                 interval: float | None = None, on_start: Callable[[], None] | None = None,
                 on_lines: Callable[[bytes], None] | None = None) -> None:
        self.path = path
        self._fd = open_log(path)
        self._worker = Worker(self._fd, os.getpid())
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._sample = sample if interval and interval > 0 else None
        self._interval = interval or 0.0
        self._on_start = on_start
        self._on_lines = on_lines  # every block of lines written (OpenTelemetry replays spans)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="asyncflow-hpc-telemetry",
                                        daemon=True)
        self.send(("I", init))

    def start(self, loop: Any) -> None:  # noqa: ARG002 - the process feed's interface
        self._thread.start()

    def send(self, msg: tuple) -> None:
        """Queue one message (any thread)."""
        if not self._closed:
            self._queue.put(msg)

    def stop_sampling(self, timeout: float = 2.0) -> None:  # noqa: ARG002
        """Take a last sample (on the thread, after what is queued)."""
        if self._sample is not None and not self._closed:
            self._queue.put(_SAMPLE)

    def detach(self) -> None:
        """Nothing to let go of: the thread never touches the loop."""

    def close(self, timeout: float = 60.0) -> None:
        """Write what is queued, stop the thread, close the file. Blocking; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("asyncflow-hpc: the telemetry thread did not finish within %.0f s",
                            timeout)
                return  # it still writes to the file: leave it open
        try:
            os.close(self._fd)
        except OSError:
            pass

    # ------------------------------------------------------------------ the thread
    def _run(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception:
                log.debug("telemetry sampler start hook failed", exc_info=True)
        get = self._queue.get
        next_sample = time.monotonic() + self._interval if self._sample else None
        waiting: list = []
        translate_at: float | None = None  # set when the first message waits
        while True:
            deadlines = [t for t in (translate_at, next_sample) if t is not None]
            try:
                msg = get(timeout=max(0.0, min(deadlines) - time.monotonic())
                          if deadlines else None)
            except queue.Empty:
                msg = None
            now = time.monotonic()
            if msg is _SAMPLE or (next_sample is not None and now >= next_sample):
                msg = None
                next_sample = now + self._interval
                sample = self._take_sample()
                if sample is not None:
                    waiting.append(sample)
            if msg is _STOP:
                self._translate(waiting)
                self._worker.end()
                return
            if msg is not None:
                waiting.append(msg)
                if translate_at is None:
                    translate_at = now + PACE
            if waiting and (translate_at is None or now >= translate_at
                            or len(waiting) >= MAX_WAITING):
                self._translate(waiting)
                waiting = []
                translate_at = None

    def _translate(self, msgs: list) -> None:
        """Translate ``msgs`` and write their lines in one write."""
        worker = self._worker
        out: list = []
        for msg in msgs:
            try:
                worker.handle(msg, out)
            except Exception:  # a bug must not lose the rest of the log
                log.exception("telemetry: translating failed")
        data = worker.flush(out)
        if data and self._on_lines is not None:
            try:
                self._on_lines(data)
            except Exception:
                log.debug("telemetry: passing lines on failed", exc_info=True)

    def _take_sample(self) -> tuple | None:
        try:
            return self._sample() if self._sample is not None else None
        except Exception:
            log.debug("telemetry sample failed", exc_info=True)
            return None
