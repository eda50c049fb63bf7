"""The telemetry attachment of one engine: what it records, flush timer, start and close.

Two ways to record and write:

* worker process (the default): the engine's *tape* (``WorkflowEngine.attach_tape``): the
  engine appends a task's record to a list whenever the task reaches another step and stamps
  the step's time on the record; no call per event. Every ``BUSY_INTERVAL`` while tasks
  change (and whenever ``SHIP_RECORDS`` records wait, in a burst that does not give the loop
  back) the tape is packed into a compact batch (:func:`.fastlog.pack_rows`, column by
  column in C) and written to the pipe of the telemetry worker process (:mod:`.worker`),
  which translates and writes on another core, concurrently with the engine.
* in process (with an OpenTelemetry bridge, whose spans must be made here; with
  ``ASYNCFLOW_HPC_TELEMETRY_WRITER=thread``; or when no worker can be started): a raw
  observer appends ``type, time, record, error`` for every event to a list; a timer
  translates it into lines at least once a second, in slices so that a burst of events does
  not hold the loop for long, and hands the text to the writer thread.

``close()`` (awaited by the engine at shutdown) writes the rest, the workflow and session
spans, a last metric snapshot and ``SessionEnded``, and waits until the log is complete on
disk. If the process exits without a shutdown, an ``atexit`` hook does the same.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import gc
import inspect
import logging
import operator
import os
import socket
import time
from typing import Any

from .._threads import in_thread
from .._version import __version__
from ..events import EventType
from ..tasks import TaskKind
from .fastlog import pack_rows, rare_item
from .metrics import Metrics
from .otel import find_bridge
from .resources import ResourceSampler, interval_from_env
from .spans import SpanFactory
from .translate import Translator
from .writer import JsonlWriter, WorkerProcess, WorkerUnavailable

__all__ = ["TelemetrySession"]

log = logging.getLogger("asyncflow_hpc.telemetry")

FLUSH_INTERVAL = 1.0
BUSY_INTERVAL = 0.01  # worker process: hand over this often while events come in
SHIP_RECORDS = 2048  # worker process: ... and whenever the tape holds this many records
# (small batches: the records are packed while they are still in the CPU's cache)
PROGRESS_INTERVAL = 1.0  # worker process: unfinished tasks' steps are written this often,
PROGRESS_RECORDS = 50_000  # ... or once per this many unfinished tasks a second if more
SLICE = 4 * 5_000  # events translated per loop turn (4 list slots per event): ~15 ms


_created = operator.attrgetter("created")


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
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._buffer: list = []  # in process: type, time, record, error, type, ...
        self._tape: list = []  # worker process: the engine's tape
        self._items: list = []  # packed, not yet handed over
        self._last_progress = time.time()
        self._active_count = 0  # unfinished tasks at the last progress write
        self._active: Any = list
        self._timer: asyncio.TimerHandle | None = None
        self._draining = False
        self._closed = False
        self._interval = interval_from_env(resource_interval)
        self._last_metric = self.started

        default = getattr(engine, "_default_backend", None)
        self.backend = default.name if default is not None else None
        bridge = find_bridge(tracer_provider)
        self._bridge = bridge
        self.spans = SpanFactory(bridge)
        self.metrics = Metrics(self.session_id)
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
        self.translator = Translator(self.session_id, self.spans, self.session_span, self.metrics)

        self.worker: WorkerProcess | None = None
        self.writer: JsonlWriter | None = None
        started_line = self.translator.event_line(
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
        if bridge is None and _use_worker():
            try:
                self.worker = WorkerProcess(path, {
                    "session_id": self.session_id, "trace_hex": self.session_span.trace_hex,
                    "span_hex": self.session_span.span_hex, "backend": self.backend,
                    "interval": self._interval},
                    sample=(lambda: ("S", sampler.line(), dict(self.metrics.node)))
                    if sampler else None,
                    interval=self._interval, on_start=sampler.prime if sampler else None)
            except WorkerUnavailable as exc:  # write in process instead
                log.debug("telemetry worker process unavailable: %s", exc)
            except OSError as exc:  # fail at the start, not hours later with no log
                self._config_error(path, exc)
        if self.worker is not None:
            self.worker.start(self._loop)
            self.worker.send(("T", started_line))
        else:
            try:
                self.writer = JsonlWriter(path, tick=sampler.line if sampler else None,
                                          interval=self._interval,
                                          on_start=sampler.prime if sampler else None)
            except OSError as exc:  # fail at the start, not hours later with no log
                self._config_error(path, exc)
            self.writer.write(started_line)
        self._unsubscribe = self._subscribe(engine)
        atexit.register(self._at_exit)
        self._schedule(BUSY_INTERVAL if self.worker is not None else FLUSH_INTERVAL)

    @staticmethod
    def _config_error(path: str, exc: OSError) -> None:
        from ..errors import ConfigurationError, UnsafePathError

        if isinstance(exc, UnsafePathError):  # a link or a folder of another user: says so
            raise exc

        raise ConfigurationError(
            f"telemetry: cannot write the event log {path!r}: {exc.strerror or exc}") from exc

    # ------------------------------------------------------------------ hot path
    def _subscribe(self, engine: Any) -> Any:
        """Worker process: attach to the engine's tape. In process: subscribe as a raw
        observer when the engine offers it (no Event object per event), else as an
        ordinary one."""
        if self.worker is not None:
            # a burst (thousands of tasks submitted or finishing in one loop turn) is handed
            # over while it lasts, so that the worker keeps pace
            self._tape, detach = engine.attach_tape(self._on_rare, self._ship_now, SHIP_RECORDS)
            self._active = engine.active_records
            return detach
        buf = self._buffer
        add = buf.extend  # one flat list: type, time, record, error, type, ...
        commands = self.translator.commands
        queued, executable = EventType.QUEUED, TaskKind.EXECUTABLE
        now = time.time

        def observe_raw(etype: str, rec: Any, error: Any = None, value: Any = None) -> None:
            # called by the engine without a guard: must not raise
            add((etype, now(), rec, error))
            if etype is queued and rec.kind is executable:
                try:
                    if rec.spec is not None:
                        commands[rec.uid] = rec.spec.command
                except Exception:
                    pass

        def observe(ev: Any) -> None:
            rec = ev.task
            add((ev.type, ev.time, rec, ev.error))
            if ev.type is queued and rec.kind is executable and rec.spec is not None:
                commands[rec.uid] = rec.spec.command

        try:
            takes_raw = "raw" in inspect.signature(engine.subscribe).parameters
        except (TypeError, ValueError):
            takes_raw = False
        if takes_raw:
            return engine.subscribe(observe_raw, raw=True)
        return engine.subscribe(observe)

    def _on_sample(self, sample: dict) -> None:  # writer thread; a dict swap is atomic
        self.metrics.node = sample

    # ------------------------------------------------------------------ flushing
    def _schedule(self, interval: float = FLUSH_INTERVAL) -> None:
        if not self._closed:
            self._timer = self._loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.worker is not None:
            self._ship()
        else:
            self._drain_step()

    def _ship(self) -> None:
        """Worker process: hand the tape over as one batch; come back soon while busy."""
        if self._closed:
            return
        busy = bool(self._tape or self._items)
        if busy or self._progress_due(time.time()):
            self._send_batch()
        self._schedule(BUSY_INTERVAL if busy else 0.25)

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

    def _on_rare(self, etype: str, rec: Any, error: BaseException | None) -> None:
        """A failure, cancellation or retry, from the engine, before the record changes: the
        record as it is (the steps before the event), then the event."""
        try:
            self._items.append(rare_item(etype, rec, error, time.time()))
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
            self.worker.send(("L", time.time(), items))  # type: ignore[union-attr]
        finally:
            if enabled:
                gc.enable()

    def _drain_step(self) -> None:
        """Translate one slice; come back next loop turn for more, else re-arm the timer."""
        if self._closed:
            return
        buf = self._buffer
        items = buf[:SLICE]
        del buf[:SLICE]
        out: list[str] = []
        now = time.time()
        try:
            self.translator.feed(items, now, out)
            if now - self._last_metric >= (self._interval if self._interval > 0 else 5.0):
                self._last_metric = now
                out.append(self.metrics.line(now))
        except Exception:
            log.exception("telemetry: translating events failed")
        self.writer.write("".join(out))  # type: ignore[union-attr]
        if buf:
            self._loop.call_soon(self._drain_step)
        else:
            self._schedule()

    def _closing_lines(self, now: float) -> str:
        """SessionEnded and the session span."""
        return (self.translator.event_line(
                    "SessionEnded", now, now, backend=self.backend,
                    attributes=dict(self._session_attrs), duration_seconds=now - self.started)
                + self.spans.close(self.session_span, now, "OK"))

    def _final_text(self) -> str:
        """In process: everything still buffered, then the closing lines (used once)."""
        out: list[str] = []
        now = time.time()
        tr = self.translator
        try:
            tr.feed(self._buffer, now, out)
        except Exception:
            log.exception("telemetry: translating events failed")
        self._buffer.clear()
        tr.finish(now, out)
        out.append(self.metrics.line(now))
        out.append(self._closing_lines(now))
        return "".join(out)

    def _finish_worker(self) -> None:
        """Worker process: the rest of the events and the end (the worker adds its spans
        and last metric snapshot before the closing lines)."""
        self._send_batch(everything=True)
        now = time.time()
        self.worker.send(("F", now, self._closing_lines(now)))  # type: ignore[union-attr]

    async def close(self) -> None:
        """Write the rest and close the file (awaited by the engine at shutdown)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        if self._timer is not None:
            self._timer.cancel()
        self._unsubscribe()
        if self.worker is not None:
            # a last resource sample (so short runs have one too), handed over on the loop
            await in_thread(self.worker.stop_sampling)
            await asyncio.sleep(0)
            self._finish_worker()
            self.worker.detach()
            await in_thread(self.worker.close)
        else:
            self.writer.tick_now()  # type: ignore[union-attr]  # a last sample, for short runs
            self.writer.write(self._final_text())  # type: ignore[union-attr]
            await in_thread(self.writer.close)  # type: ignore[union-attr]
        if self._bridge is not None:
            await in_thread(self._bridge.force_flush)

    def _at_exit(self) -> None:
        """The process ends without an engine shutdown: still leave a complete log."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.worker is not None:
                self.worker.detach()
                self._finish_worker()
                self.worker.close(timeout=10.0)
            else:
                self.writer.write(self._final_text())  # type: ignore[union-attr]
                self.writer.close(timeout=5.0)  # type: ignore[union-attr]
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<TelemetrySession {self.session_id} -> {self.path}>"
