"""One pilot of a pool: its backend, its life (queued, active, draining, ended), its tasks and
what it cost (node-hours held vs used).

The pool owns the decisions; a :class:`Pilot` only keeps the facts they are made from. Times
are ``time.time()`` seconds.
"""

from __future__ import annotations

import time
from typing import Any

from ...tasks import TaskSpec
from .template import PilotTemplate

__all__ = ["InFlight", "Pilot", "Waiting"]

STATES = ("starting", "queued", "active", "draining", "ended")


class Waiting:
    """A task in the pool's line: where it may go, its cores, since when it waits, the
    duration it is expected to take (``task_description["duration"]``)."""

    __slots__ = ("spec", "routes", "cores", "since", "hint")

    def __init__(self, spec: TaskSpec, routes: tuple[PilotTemplate, ...], cores: int,
                 since: float, hint: float | None) -> None:
        self.spec = spec
        self.routes = routes
        self.cores = cores
        self.since = since
        self.hint = hint


class InFlight:
    """A task placed on a pilot."""

    __slots__ = ("spec", "cores", "started", "placed")

    def __init__(self, spec: TaskSpec, cores: int, placed: float) -> None:
        self.spec = spec
        self.cores = cores
        self.placed = placed
        self.started: float | None = None  # the body's start, as the pilot reported it


class Pilot:
    """One pilot job of a template, and the RadicalPilotBackend that drives it."""

    def __init__(self, template: PilotTemplate, serial: int, backend: Any, reason: str) -> None:
        self.template = template
        self.name = f"{template.name}.{serial}"
        self.backend = backend
        self.reason = reason  # why it was started (min, scale out, replacement)
        self.state = "starting"
        self.submitted_at = time.time()
        self.active_at: float | None = None
        self.job_start: float | None = None  # estimated start of the allocation
        self.ended_at: float | None = None
        self.stopped_at: float | None = None  # when the pool began to end it
        self.end_reason = ""
        self.deadline: float | None = None  # when the walltime ends (estimated)
        self.capacity = template.capacity
        self.tasks: dict[str, InFlight] = {}
        self.cores_used = 0
        self.idle_since = self.submitted_at
        self.replaced = False  # a replacement was requested for its walltime
        self.replaces: Pilot | None = None  # the pilot whose walltime this one takes over
        self.busy_core_seconds = 0.0
        self.done = 0
        self.moved = 0  # tasks taken back from it and placed elsewhere
        self.error: BaseException | None = None
        self.uid: str | None = None  # RP's pilot uid
        self.runner: Any = None  # the pool's job that starts it
        self.closing = False  # its backend is being shut down

    # ------------------------------------------------------------------ life
    @property
    def live(self) -> bool:
        """Counts against the template's bounds: starting, queued or active."""
        return self.state in ("starting", "queued", "active")

    @property
    def coming(self) -> bool:
        return self.state in ("starting", "queued")

    def activate(self, bootstrap: float | None, walltime: float) -> None:
        """The pilot runs; ``bootstrap`` is the shortest submit-to-active time seen (a pilot
        that never waited in a queue), from which the allocation's start is estimated;
        ``walltime`` in seconds."""
        now = time.time()
        self.state = "active"
        self.active_at = self.idle_since = now
        start = now - bootstrap if bootstrap is not None else self.submitted_at
        self.job_start = max(self.submitted_at, start)
        self.deadline = self.job_start + walltime

    def time_left(self, now: float) -> float:
        return float("inf") if self.deadline is None else self.deadline - now

    def end(self, reason: str, error: BaseException | None = None) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        self.ended_at = time.time()
        self.end_reason = reason
        self.error = error

    # ------------------------------------------------------------------ tasks
    @property
    def free(self) -> int:
        return self.capacity - self.cores_used

    def place(self, spec: TaskSpec, cores: int) -> None:
        self.tasks[spec.uid] = InFlight(spec, cores, time.time())
        self.cores_used += cores

    def take(self, uid: str, ended: float | None = None) -> InFlight | None:
        """Remove a task (finished, or moved away); count its busy time."""
        entry = self.tasks.pop(uid, None)
        if entry is None:
            return None
        self.cores_used -= entry.cores
        if entry.started is not None:
            end = ended if ended is not None else time.time()
            self.busy_core_seconds += max(0.0, end - entry.started) * entry.cores
        if not self.tasks:
            self.idle_since = time.time()
        return entry

    # ------------------------------------------------------------------ cost
    def held_node_hours(self, now: float | None = None) -> float:
        """Nodes x time from the allocation's (estimated) start to its end (or now)."""
        if self.job_start is None:
            return 0.0
        end = self.ended_at if self.ended_at is not None else (now or time.time())
        return self.template.pilot_nodes * max(0.0, end - self.job_start) / 3600.0

    def used_node_hours(self, now: float | None = None) -> float:
        """Core-seconds of task bodies (finished and running) as node-hours."""
        busy = self.busy_core_seconds
        now = now or time.time()
        for entry in self.tasks.values():
            if entry.started is not None:
                busy += max(0.0, now - entry.started) * entry.cores
        return busy / self.template.node_cores / 3600.0

    def describe(self, now: float | None = None) -> dict[str, Any]:
        now = now or time.time()
        left = self.time_left(now)
        held = self.held_node_hours(now)
        used = self.used_node_hours(now)
        return {
            "pilot": self.name, "template": self.template.name, "uid": self.uid,
            "state": self.state, "reason": self.reason, "nodes": self.template.pilot_nodes,
            "cores": self.capacity, "running": len(self.tasks), "done": self.done,
            "moved": self.moved,
            "walltime_left_s": None if left == float("inf") or self.state == "ended"
            else round(max(0.0, left), 1),
            "submitted_at": round(self.submitted_at, 3),
            "active_at": None if self.active_at is None else round(self.active_at, 3),
            "ended_at": None if self.ended_at is None else round(self.ended_at, 3),
            "end_reason": self.end_reason or None,
            "held_node_hours": round(held, 6), "used_node_hours": round(used, 6),
            "utilisation": round(used / held, 4) if held > 0 else None,
        }
