"""From a queued task to a settled future: batches to backends, reports, retries, release.

A part of :class:`~asyncflow_hpc.engine.WorkflowEngine` (it holds no state of its own):
queued specs go to their backend in batches; the backend's reports arrive on the engine's
loop; a task is retried, or settled (its result recorded in the result store first), and
its dependents are woken.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ._arguments import safe_text
from .errors import EngineError
from .events import EventType
from .tasks import TaskKind, TaskRecord, TaskState

if TYPE_CHECKING:
    from ._submission import TaskOptions

__all__ = ["MAX_RETRY_DELAY", "Settlement"]

log = logging.getLogger("asyncflow_hpc")

_DONE, _FAILED, _CANCELLED, _RUNNING = (
    TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, TaskState.RUNNING)
_BLOCK = TaskKind.BLOCK
#: the longest wait between two attempts, whatever the backoff asks
MAX_RETRY_DELAY = 3600.0
_SETTLED, _CANCEL = object(), object()  # kinds of follow-up work in WorkflowEngine._work


class Settlement:
    """Dispatch and settling (a part of the engine; see the module docstring)."""

    def _queue(self, rec: TaskRecord, now: float = 0.0) -> None:
        backend = self.backends[rec.backend]  # type: ignore[index]
        rec.attempts += 1
        if self._tape is not None:
            rec.queued = now or time.time()
        if self._observers:
            self._emit(EventType.QUEUED, rec)
        box = self._outbox.get(backend)
        if box is None:
            self._outbox[backend] = [rec.spec]  # type: ignore[list-item]
        else:
            box.append(rec.spec)  # type: ignore[arg-type]

    def _flush_soon(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        """Hand every queued spec to its backend, one call per backend."""
        if self._flushing:
            return  # the outer call picks up what was queued meanwhile
        self._flushing = True
        try:
            while self._outbox:
                outbox, self._outbox = self._outbox, {}
                for backend, specs in outbox.items():
                    specs = [s for s in specs if s.uid in self._active]
                    if not specs:
                        continue
                    self.counts["submitted"] += len(specs)
                    if self._tape is not None:
                        now = time.time()
                        active = self._active
                        for s in specs:
                            active[s.uid].submitted = now
                    if self._observers:
                        for s in specs:
                            self._emit(EventType.SUBMITTED, self._active[s.uid])
                    try:
                        backend.submit(specs)
                    except Exception as exc:  # backend refused the batch: fail just these
                        log.exception("backend %s failed to accept %d task(s)", backend.name,
                                      len(specs))
                        for s in specs:
                            rec = self._active.get(s.uid)
                            if rec is not None:
                                self._settle_failed(rec, exc)
        finally:
            self._flushing = False

    # ------------------------------------------------------------------ reports
    def _on_report(self, uid: str, state: TaskState, value: Any, error: BaseException | None,
                   node: str | None, stamps: tuple[float, float | None] | None = None) -> None:
        """The backends' single entry point (always on the loop).

        Nothing raised by the engine's own completion, retry or journal code may leave a
        future pending: such a failure fails the task with an :class:`EngineError`.
        """
        try:
            self._report(uid, state, value, error, node, stamps)
        except Exception as exc:  # noqa: BLE001 - a bug of ours, or a hostile exception object
            rec = self._active.get(uid)
            log.exception("asyncflow-hpc failed while handling a report about %s", uid)
            if rec is not None:
                self._settle_failed(rec, EngineError(
                    f"asyncflow-hpc failed while completing task {rec.name!r} ({uid}): "
                    f"{safe_text(exc)}"))

    def _report(self, uid: str, state: TaskState, value: Any, error: BaseException | None,
                node: str | None, stamps: tuple[float, float | None] | None) -> None:
        rec = self._active.get(uid)
        if rec is None:
            return  # already settled (cancelled, or shut down)
        if node is not None:
            rec.node = node
        if stamps is not None and state is not _RUNNING:  # measured where the body ran
            if rec.state is not _RUNNING and state is not _CANCELLED:
                # the end overtook the start's report (they travel apart): start it first
                self._report(uid, _RUNNING, None, None, None, stamps)
            rec.started = stamps[0]
        end = stamps[1] if stamps is not None else None
        if state is _DONE:
            self._settle_done(rec, value, end)
        elif state is _RUNNING:
            if rec.state is not _RUNNING:
                rec.state = _RUNNING
                rec.started = time.time() if stamps is None else stamps[0]
                if self._observers:
                    self._emit(EventType.STARTED, rec)
            return
        elif state is _FAILED:
            if self._should_retry(rec, error):
                return
            self._settle_failed(rec, error if error is not None else RuntimeError(
                f"task {rec.name!r} failed on backend {rec.backend!r} without an error"), end)
        elif state is _CANCELLED:
            rec.future.cancel()  # type: ignore[union-attr]
        if self._outbox:
            self._flush()

    def _should_retry(self, rec: TaskRecord, error: BaseException | None) -> bool:
        opts: TaskOptions = rec.options
        td = rec.task_description
        retries = td.get("retries", opts.retries) if td else opts.retries
        if rec.error_history is None:
            rec.error_history = []
        rec.error_history.append(f"attempt {rec.attempts}: {type(error).__name__}: "
                                 f"{safe_text(error)}")
        if self._closing or rec.attempts > (retries or 0):
            if rec.attempts > 1 and error is not None:
                try:
                    error.add_note(f"{rec.name!r} ran {rec.attempts} times:\n  " +
                                   "\n  ".join(rec.error_history))
                except AttributeError:
                    pass
            return False
        backoff = td.get("retry_backoff", opts.retry_backoff) if td else opts.retry_backoff
        delay = min((backoff or 0.0) * 2.0 ** min(rec.attempts - 1, 64), MAX_RETRY_DELAY)
        rec.state = TaskState.PENDING
        if self._tape is not None:
            self._tape_rare(EventType.RETRIED, rec, error, time.time())
        if self._observers:
            self._emit(EventType.RETRIED, rec, error)
        log.info("retrying %s (%s) after attempt %d failed: %s", rec.name, rec.uid, rec.attempts,
                 safe_text(error))
        if delay > 0:
            handle = self._loop.call_later(delay, self._retry_now, rec)  # type: ignore[union-attr]
            self._retry_handles.add(handle)
        else:
            self._retry_now(rec)
        return True

    def _retry_now(self, rec: TaskRecord, handle: Any = None) -> None:
        if self._active.get(rec.uid) is not rec:
            return
        self._retry_handles = {h for h in self._retry_handles if not h.cancelled()}
        rec.spec.attempt = rec.attempts + 1  # type: ignore[union-attr]
        self._queue(rec)
        self._flush()

    def _settle_done(self, rec: TaskRecord, value: Any, end: float | None = None) -> None:
        fut = rec.future
        if rec.journal_key is not None and self._journal is not None:
            try:
                self._journal.record(rec.journal_key, rec, value)
            except Exception as exc:  # noqa: BLE001 - a full disk, a removed file...
                self._journal_failed(exc)
                return
        del self._active[rec.uid]
        rec.state = _DONE
        rec.finished = end or time.time()
        (self.block_counts if rec.kind is _BLOCK else self.counts)["done"] += 1
        if fut is not None and not fut.done():
            fut.set_result(value)
        tape = self._tape
        if tape is not None:
            tape.append(rec)
            if len(tape) >= self._tape_limit:
                self._tape_full()
            for more, _, full, limit in self._more_tapes:  # a second consumer (dashboard)
                more.append(rec)
                if len(more) >= limit:
                    full()
        if self._observers:
            self._emit(EventType.COMPLETED, rec, value=value)
        self._release(rec)

    def _end(self, rec: TaskRecord, etype: str, state: TaskState, count: str,
             error: BaseException | None, end: float | None = None) -> bool:
        """Stamp the end of a task that fails or is cancelled (at ``end`` when the backend
        measured it); False if it had ended."""
        if self._active.pop(rec.uid, None) is None:
            return False
        end = end or time.time()
        if self._tape is not None:  # before the record is stamped finished: see attach_tape
            self._tape_rare(etype, rec, error, end)
        rec.state = state
        rec.finished = end
        (self.block_counts if rec.kind is _BLOCK else self.counts)[count] += 1
        return True

    def _settle_failed(self, rec: TaskRecord, error: BaseException,
                       end: float | None = None) -> None:
        fut = rec.future
        if not self._end(rec, EventType.FAILED, _FAILED, "failed", error, end):
            return
        if fut is not None and not fut.done():
            if isinstance(error, (KeyboardInterrupt, SystemExit, StopIteration,
                                  StopAsyncIteration, GeneratorExit)):
                # the same on every path: a future cannot carry these as themselves
                wrapped = RuntimeError(f"task {rec.name!r} raised {type(error).__name__}"
                                       f"{': ' + safe_text(error) if error.args else ''}")
                wrapped.__cause__ = error
                error = wrapped
            elif not isinstance(error, BaseException):
                error = EngineError(f"task {rec.name!r} failed with a non-exception {error!r}")
            fut.set_exception(error)
            # a failure nobody awaits is logged by asyncio at collection; the engine has
            # already told its dependents, so only unobserved leaves should warn
        if self._observers:
            self._emit(EventType.FAILED, rec, error)
        self._release(rec)

    def _journal_failed(self, exc: BaseException) -> None:
        """The journal cannot be written: stop the run loudly instead of losing records.

        Every unfinished task (the one whose result could not be recorded included) fails
        with the same :class:`EngineError`; new submissions are refused with it.
        """
        err = EngineError(f"the journal {getattr(self._journal, 'path', '')} cannot be written "
                          f"({safe_text(exc)}); the run stops so that no result goes "
                          "unrecorded")
        err.__cause__ = exc
        log.error("%s", err)
        self._fatal = err
        self._journal = None
        for other in list(self._active.values()):
            if other.kind is not _BLOCK:
                self._settle_failed(other, err)
                backend = self.backends.get(other.backend)  # type: ignore[arg-type]
                if backend is not None and other.attempts:
                    try:
                        backend.cancel(other.uid)
                    except Exception:  # noqa: BLE001
                        log.exception("backend %s failed to cancel %s", other.backend, other.uid)

    def _on_future_cancelled(self, rec: TaskRecord) -> None:
        """TaskFuture.cancel() landed: stop the work and cancel dependents at once."""
        if not self._end(rec, EventType.CANCELED, _CANCELLED, "cancelled", None):
            return
        if rec.runner is not None and not rec.runner.done():
            rec.runner.cancel()
        if rec.children:
            self._work.extend((_CANCEL, child) for child in rec.children)
        if rec.kind is not _BLOCK and rec.attempts:
            backend = self.backends.get(rec.backend)  # type: ignore[arg-type]
            if backend is not None:
                try:
                    backend.cancel(rec.uid)
                except Exception:
                    log.exception("backend %s failed to cancel %s", rec.backend, rec.uid)
        if self._observers:
            self._emit(EventType.CANCELED, rec)
        dependents = rec.dependents
        rec.dependents = None
        if dependents:
            self._work.extend((_CANCEL, d) for d in dependents)
        self._release(rec)

    def _release(self, rec: TaskRecord) -> None:
        """Tell dependents, then drop what a finished record no longer needs."""
        dependents = rec.dependents
        rec.future = None
        rec.dependents = None
        rec.spec = None
        rec.args = ()
        rec.kwargs = {}
        rec.children = None
        self.components._finished(rec)
        if dependents:
            active = self._active
            for d in dependents:
                if active.get(d.uid) is d:
                    d.waiting -= 1
                    if d.waiting == 0:
                        self._work.append((_SETTLED, d))
        if self._work and not self._working:
            self._drain()

    def _drain(self) -> None:
        """Process follow-ups iteratively, so a chain of 100,000 tasks cannot overflow the stack."""
        self._working = True
        work = self._work
        try:
            while work:
                what, rec = work.popleft()
                if self._active.get(rec.uid) is not rec:
                    continue
                try:
                    if what is _SETTLED:
                        self._dependencies_settled(rec)
                    else:
                        fut = rec.future
                        if fut is not None and not fut.done():
                            fut.cancel()
                except Exception as exc:  # noqa: BLE001 - never leave a dependent pending
                    log.exception("asyncflow-hpc failed while starting %s", rec.uid)
                    self._settle_failed(rec, EngineError(
                        f"asyncflow-hpc failed while starting task {rec.name!r} ({rec.uid}): "
                        f"{safe_text(exc)}"))
        finally:
            self._working = False
