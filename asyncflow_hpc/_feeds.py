"""What the engine offers those who watch it (a part of the engine): observers, tapes, counts.

Observers get every task event; a *tape* is the cheaper feed for high-rate consumers
(telemetry, the dashboard); the counts by state are what progress displays show. Mixed into
:class:`~asyncflow_hpc.engine.WorkflowEngine`, whose state (``_observers``, ``_active``,
``counts``...) it reads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .events import Event, Observer
from .tasks import TaskKind, TaskRecord, TaskState

__all__ = ["Feeds"]

log = logging.getLogger("asyncflow_hpc")

_RUNNING = TaskState.RUNNING
_BLOCK = TaskKind.BLOCK


class Feeds:
    """Observers, tapes and counts of a :class:`~asyncflow_hpc.engine.WorkflowEngine`."""

    _observers: list[Observer]
    _note_listeners: list[Callable[[str, dict[str, Any]], None]]
    _active: dict[str, TaskRecord]
    _tapes: list[tuple]
    _more_tapes: list[tuple]
    _tape: list[TaskRecord] | None
    _tape_rare: Any
    _tape_full: Any
    _tape_limit: int
    counts: dict[str, int]
    block_counts: dict[str, int]

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(event)`` for every task event; returns a function that unsubscribes."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def subscribe_notes(self, listener: Callable[[str, dict[str, Any]], None]
                        ) -> Callable[[], None]:
        """Call ``listener(kind, attributes)`` for each note a backend makes
        (:meth:`Reporter.note`: a pilot started, a scale-in...); returns an unsubscribe."""
        self._note_listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._note_listeners:
                self._note_listeners.remove(listener)

        return unsubscribe

    def _on_note(self, kind: str, attributes: dict[str, Any]) -> None:
        for listener in list(self._note_listeners):
            try:
                listener(kind, attributes)
            except Exception:  # a listener's bug must not break the backend
                log.exception("note listener %r failed on %s", listener, kind)

    def attach_tape(self,
                    on_rare: Callable[[str, TaskRecord, BaseException | None, float], None],
                    on_full: Callable[[], None], limit: int = 2048,
                    ) -> tuple[list[TaskRecord], Callable[[], None]]:
        """A cheaper feed than an observer, for high-rate consumers (telemetry, dashboard).

        Returns ``(tape, detach)``. While attached, the engine appends a record to ``tape``
        when its task completes, and stamps the time of every step on the record
        (``resolved``, ``queued``, ``submitted``; ``created``, ``started`` and ``finished``
        are always kept): one append per task instead of a call per event. The consumer
        drains the list (clearing it in place) and reads the unfinished records
        (:meth:`active_records`) as often as it wants their progress. The other ends, and
        retries, go to ``on_rare(type, record, error)`` synchronously, before the record
        changes (TaskFailed, TaskCanceled: before ``finished`` is stamped; TaskRetried: before
        the next attempt's stamps overwrite this one's), with the event's time as a fourth
        argument (where the body ended, when its backend measured it). ``on_full()`` is called when the tape
        holds ``limit`` records during a burst that does not give the loop back. Callbacks
        must not raise. Each consumer gets a tape of its own.
        """
        tape: list[TaskRecord] = []
        entry = (tape, on_rare, on_full, max(1, limit))
        self._tapes.append(entry)
        self._retape()

        def detach() -> None:
            if entry in self._tapes:
                self._tapes.remove(entry)
                self._retape()

        return tape, detach

    def _retape(self) -> None:
        """The first consumer's tape on the hot path, the others beside it."""
        if not self._tapes:
            self._tape = self._tape_rare = self._tape_full = None
            self._more_tapes = []
            return
        self._tape, rare, self._tape_full, self._tape_limit = self._tapes[0]
        self._more_tapes = self._tapes[1:]
        self._tape_rare = self._rare_to_all if self._more_tapes else rare

    def _rare_to_all(self, etype: str, rec: TaskRecord, error: BaseException | None,
                     at: float) -> None:
        for _, rare, _, _ in self._tapes:
            rare(etype, rec, error, at)

    def active_records(self) -> list[TaskRecord]:
        """The records of the tasks and blocks not finished yet, oldest first."""
        return list(self._active.values())

    def _emit(self, etype: str, rec: TaskRecord, error: BaseException | None = None,
              value: Any = None) -> None:
        ev = Event(etype, rec, error, value)
        for obs in self._observers:
            try:
                obs(ev)
            except Exception:  # an observer's bug must not break the workflow
                log.exception("observer %r failed on %s", obs, etype)

    # ------------------------------------------------------------------ introspection
    def task_states(self) -> dict[str, int]:
        """Counts of tasks (not blocks) by state, for progress displays: ``running`` are
        those whose body runs now (reported by the backend from where it runs)."""
        return self.states()[0]

    def block_states(self) -> dict[str, int]:
        """Counts of blocks by state (a block runs from its start to its return)."""
        return self.states()[1]

    def states(self) -> tuple[dict[str, int], dict[str, int]]:
        """``(task_states(), block_states())`` in one pass over the unfinished records."""
        running = blocks = blocks_running = 0
        for r in self._active.values():
            if r.kind is _BLOCK:
                blocks += 1
                blocks_running += r.state is _RUNNING
            elif r.state is _RUNNING:
                running += 1
        tasks = len(self._active) - blocks
        return ({"pending": tasks - running, "running": running, "done": self.counts["done"],
                 "failed": self.counts["failed"], "cancelled": self.counts["cancelled"]},
                {"pending": blocks - blocks_running, "running": blocks_running,
                 **self.block_counts})
