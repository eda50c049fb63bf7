"""Task bodies of the local backend: how a function task's body is called in a worker thread,
on a worker loop or in a pool process, with its files staged before and checked after."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..errors import MissingOutputError
from ..files import FilePlan, missing_outputs, stage_in
from ..tasks import TaskSpec

__all__ = ["Elsewhere", "TaskBodyError", "call_body", "check_outputs", "dumps_call",
           "run_pickled", "start_body"]


def dumps_call(spec: TaskSpec) -> bytes:
    import cloudpickle

    return cloudpickle.dumps((spec.function, spec.args, spec.kwargs))


def run_pickled(blob: bytes, plan: FilePlan | None = None) -> Any:
    """Runs in a worker process: unpack the function and call it."""
    import pickle

    func, args, kwargs = pickle.loads(blob)
    name = getattr(func, "__name__", "task")
    try:
        return call_body(func, args, kwargs, plan, name)
    except BaseException as exc:  # noqa: BLE001 - sent back as itself when it survives pickling
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - would break the pool in the parent: send its text
            import traceback

            raise TaskBodyError(f"task {name!r} raised {type(exc).__name__}: {_text(exc)}\n"
                                + "".join(traceback.format_exception(exc))) from None
        raise


class TaskBodyError(RuntimeError):
    """A body's exception that could not be sent back from a worker process as itself."""


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001
        return "<unprintable>"


class Elsewhere:
    """Stands in ``_running`` for a body run by a worker loop or the process pool: cancelling
    it asks that runner to drop or stop the body."""

    __slots__ = ("cancel",)

    def __init__(self, cancel: Any) -> None:
        self.cancel = cancel


def start_body(spec: TaskSpec) -> Any:
    """On a worker loop: stage the task's files, then make its coroutine."""
    plan = spec.files
    if plan is not None:
        stage_in(plan)
    coro = spec.function(*spec.args, **spec.kwargs)  # type: ignore[misc]
    if not asyncio.iscoroutine(coro):
        return coro
    return _guarded(coro, plan, spec.name)


async def _guarded(coro: Any, plan: FilePlan | None = None, name: str = "") -> Any:
    """Run a body's coroutine; KeyboardInterrupt and SystemExit become the task's error (a
    worker loop must never be stopped by a body), and declared outputs are checked."""
    try:
        value = await coro
    except (KeyboardInterrupt, SystemExit) as exc:
        raise RuntimeError(f"task {name!r} raised {type(exc).__name__}") from exc
    if plan is not None:
        check_outputs(plan, name)
    return value


def check_outputs(plan: FilePlan, name: str) -> None:
    missing = missing_outputs(plan)
    if missing:
        raise MissingOutputError(name, missing, plan.task_dir)


_local = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    """An event loop kept for this thread (or worker process) for ``async def`` bodies."""
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def call_body(func: Any, args: tuple, kwargs: dict, plan: FilePlan | None, name: str) -> Any:
    """Call a task body in a worker thread or process, with its files staged and checked."""
    if plan is not None:
        stage_in(plan)
    try:
        result = func(*args, **kwargs)
        if asyncio.iscoroutine(result):  # an async def body, or a callable returning one
            result = _thread_loop().run_until_complete(_guarded(result, None, name))
    except StopIteration as exc:  # a future cannot carry it: the same error as a coroutine's
        raise RuntimeError(f"task body {name!r} raised StopIteration") from exc
    if plan is not None:
        check_outputs(plan, name)
    return result
