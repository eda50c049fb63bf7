"""The one narrow interface between the engine and the places tasks run.

A backend receives resolved :class:`~asyncflow_hpc.tasks.TaskSpec` objects in batches and
reports what happens to them through a single :class:`Reporter`. It never imports the
engine. Adding a backend means writing one module with one subclass of
:class:`ExecutionBackend` and naming it in :mod:`asyncflow_hpc.backends` (the registry).

Threading contract: ``submit``, ``cancel`` and ``bind`` are called on the engine's event loop
and must not block. A backend whose work finishes on other threads (a thread pool,
RADICAL-Pilot's callback thread) reports through :meth:`Reporter.threadsafe`, which hops onto
the loop with ``call_soon_threadsafe``; code already on the loop calls the reporter directly.
"""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from ..descriptions import ENGINE_KEYS, unknown_key
from ..tasks import TaskSpec, TaskState

__all__ = ["ExecutionBackend", "Reporter"]


class Reporter:
    """Where a backend sends task state changes; calls land on the engine's loop.

    ``running(uid)`` marks a task started; ``done(uid, value)``, ``failed(uid, error)`` and
    ``cancelled(uid)`` are final. ``node`` (optional) says where the task ran. A backend that
    knows when a body really started and ended where it ran (``time.time()`` there) passes
    ``at=`` (the start) and ``stamps=(started, ended)``; otherwise the engine stamps the
    report's arrival.
    """

    __slots__ = ("_sink", "_loop", "_note")

    def __init__(self, sink, loop: asyncio.AbstractEventLoop, note=None) -> None:
        # sink(uid, state, value, error, node, stamps) is the engine's handler
        self._sink = sink
        self._loop = loop
        self._note = note  # note(kind, attributes): the engine's, for the backend's decisions

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def running(self, uid: str, node: str | None = None, at: float | None = None) -> None:
        self._sink(uid, TaskState.RUNNING, None, None, node, None if at is None else (at, None))

    def done(self, uid: str, value: Any = None, node: str | None = None,
             stamps: tuple[float, float] | None = None) -> None:
        self._sink(uid, TaskState.DONE, value, None, node, stamps)

    def failed(self, uid: str, error: BaseException, node: str | None = None,
               stamps: tuple[float, float] | None = None) -> None:
        self._sink(uid, TaskState.FAILED, None, error, node, stamps)

    def cancelled(self, uid: str) -> None:
        self._sink(uid, TaskState.CANCELLED, None, None, None, None)

    def note(self, kind: str, attributes: dict[str, Any]) -> None:
        """Tell those who watch the engine (telemetry, progress) what the backend decided or
        saw, e.g. ``note("PilotStarted", {...})``; on the loop. Dropped when nobody listens."""
        if self._note is not None:
            self._note(kind, attributes)

    def threadsafe(self, uid: str, state: TaskState, value: Any = None,
                   error: BaseException | None = None, node: str | None = None,
                   stamps: tuple[float, float | None] | None = None) -> None:
        """Report from any thread: the call is queued onto the engine's loop."""
        try:
            self._loop.call_soon_threadsafe(self._sink, uid, state, value, error, node, stamps)
        except RuntimeError:  # loop closed: the engine is gone, nobody is waiting
            pass


class ExecutionBackend(abc.ABC):
    """Base class of backends.

    Life cycle: construct → ``await backend`` (or ``await backend.start()``; idempotent) →
    the engine calls ``bind(reporter)`` → ``submit(batch)`` / ``cancel(uid)`` any number of
    times → ``await shutdown()`` (idempotent). Awaiting the constructor's result is how
    radical.asyncflow users create backends, so it is kept.
    """

    #: key under which the engine files this backend; tasks select it with ``backend=``
    name: str = "backend"
    #: ``task_description`` keys this backend honours (the engine's own keys come on top)
    task_keys: frozenset[str] = frozenset()
    #: other spellings of those keys, for the "did you mean" of an unknown one
    key_aliases: Mapping[str, str] = {}

    def __init__(self) -> None:
        self._reporter: Reporter | None = None
        self._started = False
        self._closed = False

    @classmethod
    def from_env(cls, work_dir: str | os.PathLike | None = None) -> ExecutionBackend:
        """This backend as the environment configures it (``$ASYNCFLOW_HPC_BACKEND`` named it).

        ``work_dir`` is the engine's explicit work directory, if it was given one. Backends
        with settings of their own (a site, a resource) read their variables here.
        """
        return cls()

    def check_task_description(self, td: Mapping[str, Any], task: str = "") -> None:
        """Raise :class:`~asyncflow_hpc.errors.ConfigurationError` naming the first key or
        value of ``td`` this backend cannot honour.

        Called by the engine when a task is declared and for each call's own
        ``task_description``, after the engine checked its own keys. The default accepts
        :attr:`task_keys`; backends that check values too extend it.
        """
        for key in td:
            if key not in ENGINE_KEYS and key not in self.task_keys:
                raise unknown_key(key, self.task_keys, task, self.name, self.key_aliases)

    # -- life cycle -------------------------------------------------------------------
    def __await__(self) -> Generator[Any, None, ExecutionBackend]:
        return self._await_started().__await__()

    async def _await_started(self) -> ExecutionBackend:
        await self.start()
        return self

    async def start(self) -> None:
        """Acquire resources. Called once; later calls return at once."""
        if self._started:
            return
        self._started = True
        await self._start()

    async def _start(self) -> None:  # noqa: B027 - optional hook
        """Backend-specific start-up (override)."""

    def bind(self, reporter: Reporter) -> None:
        """Receive the reporter through which state changes reach the engine."""
        self._reporter = reporter

    @property
    def reporter(self) -> Reporter:
        if self._reporter is None:
            raise RuntimeError(f"backend {self.name!r} is not attached to an engine")
        return self._reporter

    # -- work -------------------------------------------------------------------------
    @abc.abstractmethod
    def submit(self, specs: Sequence[TaskSpec]) -> None:
        """Start running a batch of tasks. Must not block; report through the reporter."""

    @abc.abstractmethod
    def cancel(self, uid: str) -> None:
        """Stop a submitted task (kill its process). Unknown or finished uids are ignored.

        The engine has already settled the future; the backend need not report back.
        """

    async def shutdown(self) -> None:
        """Stop everything still running and release resources. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._shutdown()

    async def _shutdown(self) -> None:  # noqa: B027 - optional hook
        """Backend-specific shutdown (override)."""

    # -- introspection ----------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """A short description for logs, telemetry and ``doctor``."""
        return {"name": self.name, "type": type(self).__name__}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"

