"""Exception types that users of asyncflow-hpc catch.

Every error raised by the library derives from :class:`AsyncFlowError`, so a campaign can
catch "anything asyncflow-hpc said" in one place while still telling the kinds apart.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "AsyncFlowError",
    "BackendError",
    "ConfigurationError",
    "DependencyFailureError",
    "EngineError",
    "ExecutableNotFoundError",
    "JournalError",
    "MissingOutputError",
    "PilotFailedError",
    "TaskDescriptionError",
    "TaskExecutionError",
    "TaskTimeoutError",
    "UnknownBackendError",
    "UnsafePathError",
    "WorkerLostError",
]


class AsyncFlowError(Exception):
    """Base class of every error raised by asyncflow-hpc.

    Errors cross process boundaries (RADICAL-Pilot's client runs in a child process, the
    local backend's process pools): pickle's default rebuilds an exception by calling
    ``cls(*args)`` with the formatted message, which breaks every subclass whose
    ``__init__`` takes other parameters. ``__reduce__`` rebuilds without ``__init__`` instead:
    the same class, message, attributes, notes and (when it pickles) ``__cause__``.
    """

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self), self.args, dict(self.__dict__), self.__cause__))


class ConfigurationError(AsyncFlowError, ValueError):
    """A setting, key or value given by the user is wrong (the message names it)."""


class TaskDescriptionError(ConfigurationError, TypeError):
    """``task_description`` is not a dict (a TypeError, as in radical.asyncflow)."""


class MissingOutputError(AsyncFlowError, FileNotFoundError):
    """A task finished without writing an ``OutputFile`` it declared."""

    def __init__(self, task: str, names: Sequence[str], task_dir: str) -> None:
        self.task = task
        self.names = list(names)
        self.task_dir = task_dir
        files = ", ".join(repr(n) for n in self.names)
        super().__init__(f"task {task!r} did not write its declared output {files} "
                         f"(looked in {task_dir})")

    def __str__(self) -> str:
        return self.args[0]


class EngineError(AsyncFlowError, RuntimeError):
    """asyncflow-hpc itself failed while handling a task (or must stop the run); says why."""


class BackendError(AsyncFlowError):
    """A backend could not start, submit or shut down."""


class WorkerLostError(BackendError, RuntimeError):
    """The worker process running a task died (the task's own doing: ``os._exit``, a signal,
    an exception that could not be sent back); only that task fails."""


class UnknownBackendError(ConfigurationError, KeyError):
    """A task asked for a backend name that this engine does not have."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = list(known)
        super().__init__(
            f"unknown backend {name!r}; this engine has: {', '.join(self.known) or '(none)'}"
        )

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class DependencyFailureError(AsyncFlowError):
    """A task could not run because one of the tasks it depends on failed.

    ``failed_dependencies`` names the task's failed inputs; ``root_cause`` is the error that
    started it all and ``root_task`` the name of the task that raised it, however many
    dependency hops lie between: a failure at the head of a chain of 100,000 tasks gives
    every task of the chain an error naming the head, with ``__cause__`` set to the root
    error only (not to the previous hop), so printing or pickling one is short and shallow.
    """

    def __init__(
        self,
        message: str,
        failed_dependencies: Sequence[str] | None = None,
        root_cause: BaseException | None = None,
        root_task: str | None = None,
    ) -> None:
        deps = list(failed_dependencies or [])
        via = None  # the input through which a failure further up arrived
        if isinstance(root_cause, DependencyFailureError) and root_cause.root_cause is not None:
            # a hop of a chain: point at the chain's root, not at the previous hop
            root_task = root_task or root_cause.root_task
            root_cause = root_cause.root_cause
            via = deps[0] if deps and deps[0] != root_task else None
        elif root_cause is not None and root_task is None and deps:
            root_task = deps[0]  # the engine names the input whose error is root_cause first
        if root_cause is not None:
            who = ""
            if root_task and via:
                who = f"{root_task!r} (upstream of input {via!r}) failed with "
            elif root_task:
                who = f"input {root_task!r} failed with "
            detail = _first_line(root_cause)
            message = f"{message}: {who}{type(root_cause).__name__}" + (f": {detail}" if detail
                                                                       else "")
        super().__init__(message)
        self.message = message
        self.failed_dependencies = deps
        self.root_cause = root_cause
        self.root_task = root_task
        if root_cause is not None:
            self.__cause__ = root_cause

    @property
    def original_error(self) -> BaseException | None:
        """The first error along the chain that is not itself a dependency failure."""
        err = self.root_cause
        seen = 0
        while isinstance(err, DependencyFailureError) and seen < 1000:
            err, seen = err.root_cause, seen + 1
        return err


class TaskExecutionError(AsyncFlowError, RuntimeError):
    """An executable task ended with a non-zero exit code (or was killed by a signal)."""

    def __init__(
        self,
        command: str | Sequence[str],
        exit_code: int | None,
        stderr: str = "",
        *,
        task: str | None = None,
        details: str = "",
        stdout_path: str | None = None,
        stderr_path: str | None = None,
    ) -> None:
        self.command = command if isinstance(command, str) else " ".join(map(str, command))
        self.exit_code = exit_code
        self.stderr = stderr
        self.task = task
        self.details = details
        # capture_stdio=True: where the task's whole output is
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        if stderr_path and not details:
            details = f"stderr in {stderr_path}"
        tail = _tail(stderr)
        who = f"task {task!r}: " if task else ""
        code = "was killed" if exit_code is None else f"exited with code {exit_code}"
        if exit_code is not None and exit_code < 0:
            code = f"was killed by signal {-exit_code}"
        msg = f"{who}command {self.command!r} {code}"
        if details:
            msg += f" ({details})"
        if tail:
            msg += f"; stderr tail:\n{tail}"
        super().__init__(msg)


class ExecutableNotFoundError(AsyncFlowError, FileNotFoundError):
    """The program named by an executable task does not exist or is not executable."""

    def __init__(self, executable: str, command: str = "", reason: str = "not found") -> None:
        self.executable = executable
        self.command = command
        msg = f"executable {executable!r} {reason}"
        if command:
            msg += f" (command: {command!r})"
        super().__init__(msg)

    def __str__(self) -> str:
        return self.args[0]


class TaskTimeoutError(AsyncFlowError, TimeoutError):
    """A task ran longer than its ``timeout`` and was stopped."""


class JournalError(AsyncFlowError, OSError):
    """The journal could not be opened, locked or written (the message names the file).

    ``path`` is the journal's path; ``errno`` the operating system's error number when
    there is one (``ENOSPC`` for a full disk, ``EWOULDBLOCK`` when another run holds it).
    """

    def __init__(self, message: str, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        if errno is not None:
            self.errno = errno

    def __str__(self) -> str:
        return self.args[0]

    def __reduce__(self) -> tuple:
        return (_rebuild_oserror, (type(self), self.args, dict(self.__dict__), self.errno))


class UnsafePathError(AsyncFlowError, PermissionError):
    """A file asyncflow-hpc was asked to write is a trap on a shared machine: a symbolic link,
    a file of another user, or in a folder that another user owns or anyone may write to.
    The message names the path and what is wrong with it."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        return self.args[0]


class PilotFailedError(AsyncFlowError):
    """A RADICAL-Pilot pilot died or expired while tasks were bound to it."""

    def __init__(self, pilot_id: str, state: str, log_dir: str | None = None, detail: str = ""):
        self.pilot_id = pilot_id
        self.state = state
        self.log_dir = log_dir
        msg = f"pilot {pilot_id} ended in state {state}"
        if detail:
            msg += f": {detail}"
        if log_dir:
            msg += f" (logs: {log_dir})"
        super().__init__(msg)


def _rebuild(cls: type, args: tuple, state: dict,
             cause: BaseException | None = None) -> BaseException:
    """Unpickle an :class:`AsyncFlowError` without calling its ``__init__``."""
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    if cause is not None:
        exc.__cause__ = cause
    return exc


def _rebuild_oserror(cls: type, args: tuple, state: dict, errno: int | None) -> BaseException:
    exc = _rebuild(cls, args, state)
    if errno is not None:
        exc.errno = errno  # type: ignore[attr-defined]
    return exc


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``str(exc)``, at most ``limit`` characters (every hop repeats it)."""
    try:
        text = str(exc)
    except Exception:
        text = repr(exc)
    line = text.strip().split("\n", 1)[0]
    if len(line) > limit:
        line = line[:limit] + "..."
    return line


def _tail(text: str, lines: int = 20, chars: int = 4000) -> str:
    text = (text or "").rstrip()
    tail = "\n".join(text.splitlines()[-lines:])
    return tail[-chars:]
