"""Task records, the backend-neutral task spec, states and futures.

Three objects describe one task, each with one job:

* :class:`TaskFuture` is what the user holds and awaits (an :class:`asyncio.Future`).
* :class:`TaskRecord` is the engine's bookkeeping: name, workflow id, dependencies, state.
  When the task finishes, ``flow.components`` swaps it for a :class:`TaskSummary`: the same
  description in about 100 bytes, without arguments or result.
* :class:`TaskSpec` is the plain description handed to a backend once the arguments are
  resolved: nothing in it refers to the engine.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import Any

__all__ = ["TaskState", "TaskKind", "TaskSpec", "TaskRecord", "TaskSummary", "TaskFuture"]


class TaskState(str, enum.Enum):
    """Life cycle of a task; the values are what ``future.state`` returns."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})


class TaskKind(str, enum.Enum):
    FUNCTION = "function"
    EXECUTABLE = "executable"
    BLOCK = "block"

    def __str__(self) -> str:
        return self.value


class TaskSpec:
    """What a backend needs to run one task; arguments are already resolved.

    ``kind`` is FUNCTION (call ``function(*args, **kwargs)``; ``is_async`` says whether it is a
    coroutine function) or EXECUTABLE (run ``command``: an argv list, or a string for a shell
    when ``shell`` is true). ``description`` is the merged ``task_description`` minus the keys
    the engine consumed; backends translate what they understand and reject the rest.

    ``inline``: an ``async def`` body may run on the engine's own loop (the opt-in fast path);
    otherwise a backend runs every body off that loop. ``stdio``: ``(stdout_path,
    stderr_path)`` when ``capture_stdio=True`` asks an executable's output to go to files (the
    result is then the stdout path). ``files``: a :class:`~asyncflow_hpc.files.FilePlan` when the
    task declares or inherits files: it runs in ``files.task_dir`` with its inputs staged there.
    """

    __slots__ = (
        "uid", "name", "kind", "function", "args", "kwargs", "is_async", "command",
        "shell", "description", "workflow_id", "timeout", "attempt", "inline", "stdio", "files",
    )

    def __init__(
        self,
        uid: str,
        name: str,
        kind: TaskKind,
        *,
        function: Callable[..., Any] | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
        is_async: bool = False,
        command: list[str] | str | None = None,
        shell: bool = False,
        description: dict | None = None,
        workflow_id: str | None = None,
        timeout: float | None = None,
        attempt: int = 1,
        inline: bool = False,
        stdio: tuple[str, str] | None = None,
        files: Any = None,
    ) -> None:
        self.uid = uid
        self.name = name
        self.kind = kind
        self.function = function
        self.args = args
        self.kwargs = kwargs if kwargs is not None else {}
        self.is_async = is_async
        self.command = command
        self.shell = shell
        self.description = description if description is not None else {}
        self.workflow_id = workflow_id
        self.timeout = timeout
        self.attempt = attempt
        self.inline = inline
        self.stdio = stdio
        self.files = files

    @property
    def command_line(self) -> str:
        """The command as one printable string (for errors and logs)."""
        import shlex

        if self.command is None:
            return ""
        if isinstance(self.command, str):
            return self.command
        return shlex.join(self.command)

    def __repr__(self) -> str:
        what = self.command_line if self.kind is TaskKind.EXECUTABLE else self.name
        return f"<TaskSpec {self.uid} {self.kind.value} {what!r}>"


#: a record as telemetry packs it, field by field (a *row*; :mod:`asyncflow_hpc.telemetry.rows`
#: reads them in one pass, the translator by position): change both together
ROW_FIELDS = ("uid", "created", "resolved", "queued", "submitted", "started", "finished",
              "node", "attempts", "command", "name", "workflow_id", "backend", "dependencies",
              "kind._value_", "parent_uid")


class TaskRecord:
    """The engine's bookkeeping for one task (or block).

    Indexable like the reference's component dicts: ``record["description"]["workflow_id"]``,
    ``record["state"]``, ``record["name"]``, ``record["dependencies"]``, ``record["backend"]``.
    """

    __slots__ = (
        "uid", "name", "kind", "function", "options", "args", "kwargs", "task_description",
        "workflow_id", "backend", "state", "future", "dependencies", "dependents",
        "waiting", "parent", "parent_uid", "children", "attempts", "spec", "runner", "error_history",
        "created", "resolved", "queued", "submitted", "started", "finished", "node",
        "command", "journal_key", "files", "__weakref__",
    )

    def __init__(self, uid: str, name: str, kind: TaskKind, function: Callable, options: Any):
        self.uid = uid
        self.name = name
        self.kind = kind
        self.function = function
        self.options = options
        self.args: tuple = ()
        self.kwargs: dict = {}
        self.task_description: dict = {}
        self.workflow_id: str | None = None
        self.backend: str | None = None
        self.state = TaskState.PENDING
        self.future: TaskFuture | None = None
        self.dependencies: list[str] = []  # uids, for the record and telemetry
        self.dependents: list[TaskRecord] | None = None
        self.waiting = 0
        self.parent: TaskRecord | None = None
        self.parent_uid: str | None = None  # the enclosing block's uid (for telemetry rows)
        self.children: list[TaskRecord] | None = None
        self.attempts = 0
        self.spec: TaskSpec | None = None
        self.runner: asyncio.Task | None = None  # blocks: the task running the body
        self.error_history: list[str] | None = None
        self.created = 0.0
        # stamped only while a tape is attached (telemetry): see WorkflowEngine.attach_tape
        self.resolved = 0.0
        self.queued = 0.0
        self.submitted = 0.0
        self.started = 0.0
        self.finished = 0.0
        self.node: str | None = None
        self.command: Any = None  # executables: the command line, kept after the spec is dropped
        self.journal_key: str | None = None
        self.files: Any = None  # file markers from the call, then the FilePlan (or None)

    description = property(lambda self: _describe(self))

    def summary(self) -> TaskSummary:
        """The compact form ``flow.components`` keeps once the task has finished."""
        return TaskSummary(self)

    _KEYS = ("uid", "name", "type", "state", "description", "dependencies", "backend",
             "workflow_id", "future", "function", "args", "kwargs", "attempts")

    def __getitem__(self, key: str) -> Any:
        if key == "description":
            return _describe(self)
        if key == "type":
            return self.kind.value
        if key in self._KEYS:
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> tuple[str, ...]:
        return self._KEYS

    def __contains__(self, key: object) -> bool:
        return key in self._KEYS

    def __repr__(self) -> str:
        return f"<TaskRecord {self.uid} {self.name!r} {self.state.value}>"


class TaskSummary:
    """A finished task as ``flow.components`` keeps it: what it was, not what it computed.

    Reads like a record (``summary["description"]["workflow_id"]``, ``summary.node``,
    ``summary["state"]``); arguments, result and future are gone (``None``).
    """

    __slots__ = ("uid", "options", "workflow_id", "task_description", "state", "dependencies",
                 "node", "parent_uid", "backend")

    def __init__(self, rec: TaskRecord) -> None:
        self.uid = rec.uid
        self.options = rec.options
        self.workflow_id = rec.workflow_id
        self.task_description = rec.task_description
        self.state = rec.state
        self.dependencies = tuple(rec.dependencies) if rec.dependencies else ()
        self.node = rec.node
        self.parent_uid = rec.parent_uid
        self.backend = rec.backend

    name = property(lambda self: self.options.name)
    kind = property(lambda self: self.options.kind)
    function = property(lambda self: self.options.func)
    description = property(lambda self: _describe(self))
    future = args = kwargs = None
    attempts = 0

    _KEYS = TaskRecord._KEYS
    __getitem__ = TaskRecord.__getitem__
    get = TaskRecord.get
    keys = TaskRecord.keys
    __contains__ = TaskRecord.__contains__

    def __repr__(self) -> str:
        return f"<TaskSummary {self.uid} {self.name!r} {self.state.value}>"


def _describe(rec: TaskRecord | TaskSummary) -> dict:
    """The description dict of a record or summary (radical.asyncflow's component keys)."""
    opts = rec.options
    engine = getattr(opts, "engine", None)
    deps = list(rec.dependencies)
    names = []
    for d in deps:
        other = engine.components.get(d) if engine is not None else None
        names.append(other.name if other is not None else d)
    desc = {
        "uid": rec.uid,
        "name": rec.name,
        "type": rec.kind.value,
        "workflow_id": rec.workflow_id,
        "backend": rec.backend,
        "task_description": dict(rec.task_description),
        "capture_stdio": bool(getattr(opts, "capture_stdio", False)),
        "service": False,
        "state": rec.state.value,
        "depends_on": deps,
        "dependencies": names,
        "parent": rec.parent_uid,
    }
    if desc["capture_stdio"] and rec.kind is TaskKind.EXECUTABLE and engine is not None:
        root = engine.files_root
        desc["stdout"] = str(root / f"{rec.uid}.stdout")
        desc["stderr"] = str(root / f"{rec.uid}.stderr")
    return desc


class TaskFuture(asyncio.Future):
    """The future returned by calling a decorated function.

    Behaves like any :class:`asyncio.Future`; adds ``uid``, ``state`` (the task's life-cycle
    state, including RUNNING when the backend reports it) and ``task`` (its record).
    Cancelling it cancels the task on its backend and every task that depends on it.
    """

    __slots__ = ("uid", "task", "_on_cancel")

    @property
    def state(self) -> TaskState:
        return self.task.state

    @property
    def name(self) -> str:
        return self.task.name

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._on_cancel(self.task)
        return True

    def __repr__(self) -> str:
        return f"<TaskFuture {self.uid} {self.task.name!r} {self.task.state.value}>"
