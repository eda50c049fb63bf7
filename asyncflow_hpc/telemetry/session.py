"""The telemetry attachment of one engine: what it records, hand-over timer, start and close.

The engine's *tape* (``WorkflowEngine.attach_tape``) is the one feed: the engine stamps the
time of every step on a task's record and appends the record to the tape when the task
completes; no call per event. Every ``BUSY_INTERVAL`` while tasks change (and whenever
``SHIP_RECORDS`` records wait, in a burst that does not give the loop back) the tape is
packed into a compact batch (:func:`.rows.pack_rows`, in C) and handed to the telemetry
worker (:mod:`.worker`), which translates it with the one translator and writes the log:

* in a process of its own (the default), fed through a pipe, on another core;
* on a thread (:class:`.thread_worker.ThreadWorker`) when the process may use one CPU only,
  with ``ASYNCFLOW_HPC_TELEMETRY_WRITER=thread``, when no process can be started, or with an
  OpenTelemetry bridge, whose spans are replayed from the translator's span lines.

A backend's rare notes (``Reporter.note``: a pilot pool's decisions and each pilot's cost,
through ``WorkflowEngine.subscribe_notes``) are written as event lines of their own kind
(``PilotDecision``, ``PilotEnded``) as they come.

``close()`` (awaited by the engine at shutdown) hands over the rest, the workflow and session
spans, a last metric snapshot and ``SessionEnded``, and waits until the log is complete on
disk. If the process exits without a shutdown, an ``atexit`` hook does the same.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import gc
import logging
import operator
import os
import socket
import time
from typing import Any

from .._threads import in_thread
from .._version import __version__
from .metrics import Metrics
from .otel import find_bridge
from .resources import ResourceSampler, interval_from_env
from .rows import pack_rows, rare_item
from .spans import SpanFactory
from .thread_worker import ThreadWorker
from .translator import Translator
from .writer import WorkerProcess, WorkerUnavailable

__all__ = ["TelemetrySession"]

log = logging.getLogger("asyncflow_hpc.telemetry")

BUSY_INTERVAL = 0.01  # hand over this often while events come in
IDLE_INTERVAL = 0.25  # ... and look this often when nothing happens
SHIP_RECORDS = 2048  # ... and whenever the tape holds this many records
# (small batches: the records are packed while they are still in the CPU's cache)
PROGRESS_INTERVAL = 1.0  # unfinished tasks' steps are written this often,
PROGRESS_RECORDS = 50_000  # ... or once per this many unfinished tasks a second if more
STATUS_INTERVAL = 1.0  # the engine's counts (an EngineProgress event) this often
BACKENDS_EVERY = 5  # ... with the backends' descriptions every this many, when they changed


_created = operator.attrgetter("created")


def _nothing() -> None:
    """Unsubscribe from the notes of an engine that has none."""


def _use_worker() -> bool:
    """A worker process, unless asked not to (``ASYNCFLOW_HPC_TELEMETRY_WRITER=thread``) or
    the process may use one CPU only (the worker would take turns with the engine on it)."""
    mode = os.environ.get("ASYNCFLOW_HPC_TELEMETRY_WRITER", "auto").strip().lower()
    if mode in ("thread", "inline", "0", "off", "no", "false"):
        return False
    if mode == "process":
        return True
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return cpus > 1


class TelemetrySession:
    """Records one engine's events to a RHAPSODY-format JSONL file (and OpenTelemetry)."""

    def __init__(self, engine: Any, path: str | os.PathLike, *,
                 resource_interval: float | None = None, tracer_provider: Any = None) -> None:
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, f"{engine.uid}.telemetry.jsonl")
        self.path = path
        self.session_id = engine.uid
        self.started = time.time()
        self._loop = asyncio.get_running_loop()
        self._tape: list = []  # the engine's tape
        self._items: list = []  # packed, not yet handed over
        self._last_progress = time.time()
        self._active_count = 0  # unfinished tasks at the last progress write
        self._active: Any = list
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._interval = interval_from_env(resource_interval)

        default = getattr(engine, "_default_backend", None)
        self.backend = default.name if default is not None else None
        bridge = find_bridge(tracer_provider)
        self._bridge = bridge
        self.spans = SpanFactory(bridge)
        self.metrics = Metrics(self.session_id)  # the node's figures, for the worker's metrics
        backends = {}
        for name, b in getattr(engine, "backends", {}).items():
            try:
                backends[name] = b.describe()
            except Exception:
                backends[name] = {"name": name}
        self._session_attrs = {"session_id": self.session_id, "hostname": socket.gethostname(),
                               "pid": os.getpid(), "version": __version__,
                               "backends": sorted(backends)}
        self.session_span = self.spans.open(
            "session", None, self.started, dict(self._session_attrs),
            bridge.current_context() if bridge is not None else None)
        # the session's own lines, made here (the worker's translator makes the tasks')
        self._own_lines = Translator(self.session_id, self.session_span.trace_hex,
                                     self.session_span.span_hex)
        started_line = self._own_lines.event_line(
            "SessionStarted", self.started, self.started, backend=self.backend,
            attributes={**self._session_attrs, "backends": backends})
        sampler = None
        if self._interval > 0:
            try:
                sampler = ResourceSampler(self.session_id, self.backend,
                                          lambda: self.session_span.ids_json,
                                          on_sample=self._on_sample)
            except Exception as exc:  # psutil missing or unusable here: no samples
                log.debug("resource sampling off: %s", exc)
        init = {"session_id": self.session_id, "trace_hex": self.session_span.trace_hex,
                "span_hex": self.session_span.span_hex, "backend": self.backend,
                "interval": self._interval}
        feed = dict(sample=(lambda: ("S", sampler.line(), dict(self.metrics.node)))
                    if sampler else None,
                    interval=self._interval, on_start=sampler.prime if sampler else None)
        self.worker: WorkerProcess | ThreadWorker | None = None
        try:
            if bridge is None and _use_worker():
                try:
                    self.worker = WorkerProcess(path, init, **feed)
                except WorkerUnavailable as exc:  # on a thread instead
                    log.debug("telemetry worker process unavailable: %s", exc)
            if self.worker is None:
                on_lines = None
                if bridge is not None:
                    skip = self.session_span.span_hex

                    def on_lines(lines: bytes) -> None:
                        bridge.replay(lines, skip)

                self.worker = ThreadWorker(path, init, on_lines=on_lines, **feed)
        except OSError as exc:  # fail at the start, not hours later with no log
            self._config_error(path, exc)
        self.worker.start(self._loop)
        self.worker.send(("T", started_line))
        # a burst (thousands of tasks submitted or finishing in one loop turn) is handed
        # over while it lasts, so that the worker keeps pace
        self._tape, self._unsubscribe = engine.attach_tape(self._on_rare, self._ship_now,
                                                           SHIP_RECORDS)
        self._active = engine.active_records
        # a backend's notes (a pilot pool's decisions and costs): an event line each
        subscribe_notes = getattr(engine, "subscribe_notes", None)
        self._unsubscribe_notes = (subscribe_notes(self._on_note) if subscribe_notes is not None
                                   else _nothing)
        self._states = getattr(engine, "states", None)
        self._engine_backends = getattr(engine, "backends", {})
        self._next_status = 0.0
        self._status_count = 0
        self._last_backends: dict = backends
        atexit.register(self._at_exit)
        self._schedule(BUSY_INTERVAL)

    @staticmethod
    def _config_error(path: str, exc: OSError) -> None:
        from ..errors import ConfigurationError, UnsafePathError

        if isinstance(exc, UnsafePathError):  # a link or a folder of another user: says so
            raise exc

        raise ConfigurationError(
            f"telemetry: cannot write the event log {path!r}: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------ hand-over
    def _on_sample(self, sample: dict) -> None:  # writer thread; a dict swap is atomic
        self.metrics.node = sample

    def _schedule(self, interval: float) -> None:
        if not self._closed:
            self._timer = self._loop.call_later(interval, self._ship)

    def _ship(self) -> None:
        """Hand the tape over as one batch; come back soon while busy."""
        self._timer = None
        if self._closed:
            return
        busy = bool(self._tape or self._items)
        now = time.time()
        if busy or self._progress_due(now):
            self._send_batch()
        if now >= self._next_status:
            self._next_status = now + STATUS_INTERVAL
            self._send_status(now)
        self._schedule(BUSY_INTERVAL if busy else IDLE_INTERVAL)

    def _send_status(self, now: float) -> None:
        """An EngineProgress event: the engine's counts of tasks and blocks by state (what
        the progress display shows), and the backends' descriptions when they changed (a
        pilot's state, say). Read by ``asyncflow-hpc dashboard``; the report skips it."""
        if self._states is None:
            return
        try:
            tasks, blocks = self._states()
            attrs: dict[str, Any] = {"tasks": tasks, "blocks": blocks}
            self._status_count += 1
            if self._status_count % BACKENDS_EVERY == 1:
                backends = {n: b.describe() for n, b in self._engine_backends.items()}
                if backends != self._last_backends:
                    self._last_backends = backends
                    attrs["backends"] = backends
            line = self._own_lines.event_line("EngineProgress", now, now, backend=self.backend,
                                              attributes=attrs)
        except Exception:  # a description that is not JSON, a backend's bug: skip this one
            log.debug("telemetry: engine progress not written", exc_info=True)
            return
        self.worker.send(("T", line))

    def _on_note(self, kind: str, attributes: dict[str, Any]) -> None:
        """A backend's note (``PilotDecision``, ``PilotEnded``...): one event line of that type,
        the note's attributes as its attributes, the backend (``pool``) that made it."""
        if self._closed:
            return
        now = time.time()
        pool = attributes.get("pool")
        try:
            line = self._own_lines.event_line(
                kind, now, now, backend=pool if isinstance(pool, str) else self.backend,
                attributes=attributes)
        except Exception:  # a note that is not JSON: skip it, the run goes on
            log.debug("telemetry: note %s not written", kind, exc_info=True)
            return
        self.worker.send(("T", line))

    def _progress_due(self, now: float) -> bool:
        """Time to write the unfinished tasks' steps: once a second, less often when very
        many are unfinished (every record is read each time)."""
        since = now - self._last_progress
        if since < PROGRESS_INTERVAL:
            return False
        return since >= self._active_count / PROGRESS_RECORDS

    def _ship_now(self) -> None:
        """Hand a burst over, called by the engine (must not raise)."""
        try:
            if not self._closed:
                self._send_batch()
        except Exception:
            log.debug("telemetry: handing events over failed", exc_info=True)

    def _snapshot(self, everything: bool = False) -> None:
        """Pack the records to write now, as they are now: the tasks finished since the last
        time (each written once, with all its steps); at least once a second (less often
        when very many run) the unfinished ones older than a second, so that the steps of a
        long task reach the log while it runs; and at the end every unfinished one. A burst
        of short tasks costs one row per task."""
        now = time.time()
        if everything or self._progress_due(now):
            self._last_progress = now
            active = self._active()
            if not everything:  # the engine lists them oldest first
                active = active[:bisect.bisect_left(active, now - PROGRESS_INTERVAL,
                                                    key=_created)]
            records = self._tape + active
            self._active_count = len(active)
        else:
            records = list(self._tape)
        self._tape.clear()
        if records:
            try:
                self._items.append(pack_rows(records, now))
            except Exception:
                log.exception("telemetry: packing events failed")

    def _on_rare(self, etype: str, rec: Any, error: BaseException | None, at: float) -> None:
        """A failure, cancellation or retry, from the engine, before the record changes: the
        record as it is (the steps before the event), then the event (at ``at``)."""
        try:
            self._items.append(rare_item(etype, rec, error, at))
        except Exception:
            log.debug("telemetry: recording %s failed", etype, exc_info=True)

    def _send_batch(self, everything: bool = False) -> None:
        # the rows are thousands of short-lived tuples: no point in letting them start
        # garbage collections of the engine's objects; they are gone again by the end
        enabled = gc.isenabled()
        gc.disable()
        try:
            self._snapshot(everything)
            items = self._items
            if not items:
                return
            self._items = []
            self.worker.send(("L", time.time(), items))
        finally:
            if enabled:
                gc.enable()

    def _closing_lines(self, now: float) -> str:
        """SessionEnded and the session span."""
        return (self._own_lines.event_line(
                    "SessionEnded", now, now, backend=self.backend,
                    attributes=dict(self._session_attrs), duration_seconds=now - self.started)
                + self.spans.close(self.session_span, now, "OK"))

    def _finish_worker(self) -> None:
        """The rest of the events and the end (the worker adds its spans and last metric
        snapshot before the closing lines)."""
        self._send_batch(everything=True)
        now = time.time()
        self._send_status(now)  # the final counts
        self.worker.send(("F", now, self._closing_lines(now)))

    async def close(self) -> None:
        """Write the rest and close the file (awaited by the engine at shutdown)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        if self._timer is not None:
            self._timer.cancel()
        self._unsubscribe()
        self._unsubscribe_notes()
        # a last resource sample (so short runs have one too), handed over on the loop
        await in_thread(self.worker.stop_sampling)
        await asyncio.sleep(0)
        self._finish_worker()
        self.worker.detach()
        await in_thread(self.worker.close)
        if self._bridge is not None:
            await in_thread(self._bridge.force_flush)

    def _at_exit(self) -> None:
        """The process ends without an engine shutdown: still leave a complete log."""
        if self._closed:
            return
        self._closed = True
        try:
            self.worker.detach()
            self._finish_worker()
            self.worker.close(timeout=10.0)
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<TelemetrySession {self.session_id} -> {self.path}>"
