"""Append complete JSON lines to a file from a background thread.

The event loop hands over whole blocks of lines; a thread writes them with ``os.write`` on a
file opened ``O_APPEND`` with mode 0600, so a slow shared filesystem never stalls the loop and
each block lands in one system call (whole lines, also when several writers share a file).
The same thread can run a periodic job (the resource sampler), whose lines are written too.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

__all__ = ["JsonlWriter", "open_log"]

log = logging.getLogger("asyncflow_hpc.telemetry")

_STOP = object()
_TICK = object()
# files this process has opened: a second engine in the same run appends, a new run truncates
_opened_here: set[str] = set()
_opened_lock = threading.Lock()


def open_log(path: str) -> int:
    """Open ``path`` for appending, private to the user; truncate it unless this process
    already writes there (several engines in one script share one log)."""
    real = os.path.realpath(path)
    with _opened_lock:
        fresh = real not in _opened_here
        _opened_here.add(real)
    parent = os.path.dirname(real)
    if parent:
        os.makedirs(parent, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    if fresh:
        flags |= os.O_TRUNC
    fd = os.open(real, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on open: make it private too
    except OSError:
        pass
    return fd


class JsonlWriter:
    """Write blocks of JSON lines in order; optionally call ``tick()`` every ``interval`` s.

    ``tick`` runs on the writer thread and returns text to append (or ``""``); ``on_start``
    runs once on that thread before anything else.
    """

    def __init__(self, path: str, *, tick: Callable[[], str] | None = None,
                 interval: float | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        self.path = path
        self._on_start = on_start
        self._fd = open_log(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._tick = tick
        self._interval = interval if tick is not None and interval and interval > 0 else None
        self._lock = threading.Lock()  # serialises os.write between the thread and write_now
        self._failed = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="asyncflow-hpc-telemetry",
                                        daemon=True)
        self._thread.start()

    def write(self, text: str) -> None:
        """Queue text (whole lines) for the thread."""
        if text and not self._closed:
            self._queue.put(text)

    def tick_now(self) -> None:
        """Run the periodic job once more, after what is queued (a last sample at the end)."""
        if self._interval is not None and not self._closed:
            self._queue.put(_TICK)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, stop the thread, close the file. Blocking; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        with self._lock:
            if self._fd >= 0:
                try:
                    os.close(self._fd)
                except OSError:
                    pass
                self._fd = -1

    # ------------------------------------------------------------------ thread
    def _run(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception:
                log.debug("telemetry writer start hook failed", exc_info=True)
        get = self._queue.get
        interval = self._interval
        next_tick = time.monotonic() + interval if interval else None
        while True:
            try:
                if next_tick is None:
                    item = get()
                else:
                    item = get(timeout=max(0.0, next_tick - time.monotonic()))
            except queue.Empty:
                item = None
            if item is _STOP:
                # drain what was queued before the stop marker
                while True:
                    try:
                        rest = self._queue.get_nowait()
                    except queue.Empty:
                        return
                    if rest is _TICK:
                        self._run_tick()
                    elif rest is not _STOP:
                        self._write(_encode(rest))
            if item is _TICK:
                self._run_tick()
            elif item is not None:
                self._write(_encode(item))
            if next_tick is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + interval  # type: ignore[operator]
                self._run_tick()

    def _run_tick(self) -> None:
        try:
            text = self._tick()  # type: ignore[misc]
        except Exception:
            log.debug("telemetry periodic job failed", exc_info=True)
            return
        if text:
            self._write(_encode(text))

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self._fd < 0:
                return
            view = memoryview(data)
            try:
                while view:
                    n = os.write(self._fd, view)
                    view = view[n:]
            except OSError as exc:
                if not self._failed:
                    self._failed = True
                    log.warning("asyncflow-hpc: cannot write telemetry to %s: %s", self.path, exc)


def _encode(text: str) -> bytes:
    # a lone surrogate (from a file name, say) becomes a \udcxx escape: still valid JSON
    return text.encode("utf-8", "backslashreplace")
