"""The engine's event stream, which observers (telemetry, journal, progress) subscribe to.

The engine builds an :class:`Event` only when someone listens, so an unobserved run pays
nothing. Observers are called on the event loop and must return quickly: one that needs to
do I/O buffers and writes in batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["Event", "EventType", "Observer"]


class EventType:
    """Event names, in the order a task passes through them (RHAPSODY's vocabulary)."""

    CREATED = "TaskCreated"
    RESOLVED = "TaskResolved"
    QUEUED = "TaskQueued"
    SUBMITTED = "TaskSubmitted"
    STARTED = "TaskStarted"
    COMPLETED = "TaskCompleted"
    FAILED = "TaskFailed"
    CANCELED = "TaskCanceled"
    RETRIED = "TaskRetried"
    FINAL = frozenset({"TaskCompleted", "TaskFailed", "TaskCanceled"})


class Event:
    """One thing that happened to one task."""

    __slots__ = ("type", "time", "task", "error", "value", "attributes")

    def __init__(self, type: str, task: Any, error: BaseException | None = None,
                 value: Any = None, attributes: dict | None = None) -> None:
        self.type = type
        self.time = time.time()
        self.task = task  # the TaskRecord: uid, name, kind, workflow_id, backend, parent, ...
        self.error = error
        self.value = value
        self.attributes = attributes

    def __repr__(self) -> str:
        return f"<Event {self.type} {self.task.uid}>"


Observer = Callable[[Event], None]
