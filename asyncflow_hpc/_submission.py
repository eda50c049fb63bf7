"""From a call to a queued task: options, dependencies, files, resolution, blocks, replay.

A part of :class:`~asyncflow_hpc.engine.WorkflowEngine` (it holds no state of its own):
a decorated function's call becomes a :class:`~asyncflow_hpc.tasks.TaskRecord` whose
future is returned at once; when its dependencies settle, its arguments are resolved and
its :class:`~asyncflow_hpc.tasks.TaskSpec` is queued (see :mod:`._settlement`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._arguments import command_from, find_futures, future_name, place_markers, resolve
from .descriptions import check_engine_keys
from .errors import (
    ConfigurationError,
    DependencyFailureError,
    EngineError,
    TaskDescriptionError,
    UnknownBackendError,
)
from .events import EventType
from .files import FilePlan, InputFile, OutputFile, StageIn
from .tasks import TaskFuture, TaskKind, TaskRecord, TaskSpec, TaskState

if TYPE_CHECKING:
    from .engine import WorkflowEngine

__all__ = ["Submission", "TaskOptions"]

_RUNNING = TaskState.RUNNING
_FUNCTION, _EXECUTABLE, _BLOCK = TaskKind.FUNCTION, TaskKind.EXECUTABLE, TaskKind.BLOCK


class TaskOptions:
    """What a decorator captured once, so a call does no introspection."""

    __slots__ = ("kind", "func", "name", "is_async", "task_description", "backend", "service",
                 "capture_stdio", "retries", "timeout", "retry_backoff", "inline", "engine",
                 "td_checked_on")

    def __init__(self, kind: TaskKind, func: Callable, *, backend: str | None, service: bool,
                 capture_stdio: bool, retries: int, timeout: float | None,
                 task_description: Mapping | None, retry_backoff: float,
                 inline: bool | None, engine: WorkflowEngine) -> None:
        if not callable(func):
            raise TypeError(f"a task must decorate a function, got {func!r}")
        self.kind = kind
        self.func = func
        self.name = getattr(func, "__name__", None) or type(func).__name__
        self.is_async = inspect.iscoroutinefunction(func)
        self.engine = engine  # records read the engine's file root and components through it
        if kind is _BLOCK and not self.is_async:
            raise TypeError(f"@block needs an 'async def' function, got {self.name!r}")
        if not isinstance(service, bool):
            raise TypeError(f"service= must be True or False, got {service!r}")
        if service:
            raise ConfigurationError(
                f"service=True on {self.name!r} is not supported: asyncflow-hpc has no service "
                "tasks (long-running endpoints other tasks talk to); start the service from an "
                "executable task or outside the campaign")
        if not isinstance(capture_stdio, bool):
            raise TypeError(f"capture_stdio= must be True or False, got {capture_stdio!r}")
        if inline is not None and not isinstance(inline, bool):
            raise TypeError(f"inline= must be True, False or None, got {inline!r}")
        if inline and kind is not _FUNCTION:
            raise ConfigurationError(f"inline=True applies to function tasks only ({self.name!r})")
        self.inline = inline
        td: dict = {}
        try:
            param = inspect.signature(func).parameters.get("task_description")
        except (TypeError, ValueError):
            param = None
        if param is not None and param.default not in (inspect.Parameter.empty, None):
            if not isinstance(param.default, Mapping):
                raise TaskDescriptionError(
                    f"the default of 'task_description' in {self.name!r} must be a dict, got "
                    f"{type(param.default).__name__}")
            td.update(param.default)
        if task_description:
            td.update(task_description)
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"backend= must be a backend name, got {backend!r}")
        self.backend = backend
        self.task_description = td
        #: the backend that accepted ``task_description`` (checked again on another one)
        self.td_checked_on: str | None = None
        if td:
            check_engine_keys(td, self.name)
            target = engine._backend_named(backend)
            if target is not None:  # a started engine: the task's backend checks its keys
                target.check_task_description(td, self.name)
                self.td_checked_on = target.name
        self.service = service
        self.capture_stdio = capture_stdio
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigurationError(f"retries= must be an integer >= 0, got {retries!r}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not math.isfinite(timeout) or timeout <= 0):
            raise ConfigurationError(f"timeout= must be a number of seconds > 0, got {timeout!r}")
        if (isinstance(retry_backoff, bool) or not isinstance(retry_backoff, (int, float))
                or not math.isfinite(retry_backoff) or retry_backoff < 0):
            raise ConfigurationError(
                f"retry_backoff= must be a number of seconds >= 0, got {retry_backoff!r}")
        self.retries = retries
        self.timeout = timeout
        self.retry_backoff = retry_backoff


class Submission:
    """Calls, dependencies and resolution (a part of the engine; see the module docstring)."""

    def _call(self, opts: TaskOptions, args: tuple, kwargs: dict) -> TaskFuture:
        if not self._started or self._closed or self._closing:
            state = "shut down" if (self._closed or self._closing) else "not started"
            raise RuntimeError(
                f"cannot submit {opts.name!r}: the workflow engine is {state} "
                "(create it with 'await WorkflowEngine.create(...)')")
        if self._fatal is not None:
            raise EngineError(f"cannot submit {opts.name!r}: {self._fatal}")
        if threading.get_ident() != self._thread_id:
            raise RuntimeError(
                f"cannot submit {opts.name!r} from this thread: task bodies run in the backend's "
                "workers, and tasks are submitted from the engine's event loop only; to compose "
                "tasks, decorate the composing function with @flow.block instead")
        td = opts.task_description
        wid = None
        bad_td: BaseException | None = None
        call_td_to_check: Mapping | None = None
        if kwargs:
            if "task_description" in kwargs:
                call_td = kwargs.pop("task_description")
                if call_td:
                    if isinstance(call_td, Mapping):
                        td = {**td, **call_td}
                        try:
                            check_engine_keys(call_td, opts.name)
                        except ConfigurationError as exc:
                            bad_td = exc
                        else:
                            call_td_to_check = call_td
                    else:
                        raise TaskDescriptionError(
                            f"task_description of {opts.name!r} must be a dict, got "
                            f"{type(call_td).__name__}")
            if "workflow_id" in kwargs:
                wid = kwargs.pop("workflow_id")
                if wid is not None and (not isinstance(wid, str) or not wid):
                    bad_td = ConfigurationError(
                        f"workflow_id of {opts.name!r} must be a non-empty string, got {wid!r}")
                    wid = None
        if wid is None:
            wid = self._scope_var.get()
        self._counter += 1
        kind = opts.kind
        uid = f"{'block' if kind is _BLOCK else 'task'}.{self._counter:06d}"
        rec = TaskRecord(uid, opts.name, kind, opts.func, opts)
        rec.args = args
        rec.kwargs = kwargs
        rec.task_description = td
        rec.workflow_id = wid
        rec.created = time.time()
        parent = self._block_var.get()
        if parent is not None:
            rec.parent = parent
            rec.parent_uid = parent.uid
            if parent.children is None:
                parent.children = []
            parent.children.append(rec)
            if wid is None:
                rec.workflow_id = parent.workflow_id
        fut = TaskFuture(loop=self._loop)
        fut.uid = uid
        fut.task = rec
        fut._on_cancel = self._on_future_cancelled
        rec.future = fut
        self.components._add(uid, rec)
        self._active[uid] = rec
        # backend: chosen now, so an unknown name fails this task only
        bname = opts.backend
        if bname is None or kind is _BLOCK:
            rec.backend = self._default_backend.name  # type: ignore[union-attr]
        elif bname in self.backends:
            rec.backend = bname
        else:
            rec.backend = bname
            bad_td = UnknownBackendError(bname, list(self.backends))
        if bad_td is None and (call_td_to_check or (
                opts.task_description and opts.td_checked_on != rec.backend)):
            bad_td = self._backend_rejects(opts, rec.backend, call_td_to_check)
        if self._observers:
            self._emit(EventType.CREATED, rec)
        if bad_td is not None:
            self._settle_failed(rec, bad_td)
            return fut

        deps, markers = find_futures(args, kwargs) if (args or kwargs) else (None, None)
        if markers and kind is not _BLOCK:
            try:
                deps = self._declare_files(rec, markers, deps)
            except (TypeError, ValueError) as exc:
                self._settle_failed(rec, exc)
                return fut
        if deps:
            waiting = 0
            dep_uids = rec.dependencies
            for d in deps:
                dtask = getattr(d, "task", None)
                if dtask is not None and isinstance(d, TaskFuture):
                    dep_uids.append(d.uid)
                    if d is fut:
                        continue
                    if not d.done() and self._active.get(d.uid) is dtask:
                        if dtask.dependents is None:
                            dtask.dependents = []
                        dtask.dependents.append(rec)
                        waiting += 1
                        continue
                else:
                    dep_uids.append(future_name(d))
                if not d.done():
                    # a plain asyncio future, or one of another engine
                    d.add_done_callback(functools.partial(self._foreign_dep_done, rec))
                    waiting += 1
            rec.waiting = waiting
            if waiting:
                return fut
        self._dependencies_settled(rec)
        if self._outbox and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_soon)  # type: ignore[union-attr]
        return fut

    def _declare_files(self, rec: TaskRecord, markers: list, deps: list | None) -> list | None:
        """Note a task's file markers; an InputFile named like an earlier task's OutputFile
        makes that task a dependency (the file must exist before this task starts)."""
        rec.files = markers
        outputs = []
        for m in markers:
            if type(m) is OutputFile:
                if m.filename not in outputs:
                    outputs.append(m.filename)
            elif type(m) is InputFile and m.path == m.filename:
                producer = self._producer_by_name.get(m.filename)
                if producer is not None:
                    prec = self._active.get(producer)
                    if prec is not None and prec.future is not None:
                        deps = [*(deps or ()), prec.future]
                    elif producer not in rec.dependencies:
                        rec.dependencies.append(producer)  # finished already: for the record
        if outputs:
            self._file_outputs[rec.uid] = tuple(outputs)
            for name in outputs:
                self._producer_by_name[name] = rec.uid
        return deps

    def _file_plan(self, rec: TaskRecord) -> FilePlan | None:
        """Where a file task runs and what is staged in: producers' outputs (implicit data),
        InputFiles (by producer name, or from outside the campaign), declared outputs."""
        markers = rec.files or ()
        inputs: dict[str, StageIn] = {}
        outs = self._file_outputs
        root = str(self.files_root)
        if self.implicit_data and outs:
            for dep in rec.dependencies:
                for name in outs.get(dep, ()):
                    inputs.setdefault(name, StageIn(os.path.join(root, dep, name), name, "link"))
        for m in markers:
            if type(m) is not InputFile:
                continue
            name = m.filename
            producer = self._producer_by_name.get(name) if m.path == name else None
            if producer is not None and producer != rec.uid:
                inputs[name] = StageIn(os.path.join(root, producer, name), name, "link")
            elif m.is_url:
                inputs[name] = StageIn(m.path, name, "copy")
            elif os.path.isfile(m.path):
                inputs[name] = StageIn(os.path.abspath(m.path), name, "copy")
            else:
                raise FileNotFoundError(
                    f"InputFile {m.path!r} of task {rec.name!r} is not an OutputFile of an "
                    "earlier task, an existing file or a URL")
        if not inputs and not markers:
            return None
        self._ensure_files_root()
        task_dir = os.path.join(root, rec.uid)
        outputs = list(outs.get(rec.uid, ()))
        return FilePlan(task_dir, list(inputs.values()), outputs)

    def _foreign_dep_done(self, rec: TaskRecord, _fut: asyncio.Future) -> None:
        if self._active.get(rec.uid) is not rec:
            return
        rec.waiting -= 1
        if rec.waiting == 0:
            self._dependencies_settled(rec)
            self._flush()

    # ------------------------------------------------------------------ resolution
    def _dependencies_settled(self, rec: TaskRecord) -> None:
        """All inputs are final: fail, cancel, or resolve arguments and queue the task."""
        args, kwargs = rec.args, rec.kwargs
        if rec.dependencies:
            problems: list = []
            try:
                args = resolve(args, problems)
                kwargs = resolve(kwargs, problems) if kwargs else kwargs
            except RecursionError:
                self._settle_failed(rec, ConfigurationError(
                    f"arguments of {rec.name!r} are nested too deeply (or contain a cycle)"))
                return
            except TypeError as exc:
                self._settle_failed(rec, TypeError(f"arguments of {rec.name!r}: {exc}"))
                return
            if problems:
                if any(p[1] is None for p in problems):  # a cancelled input
                    rec.future.cancel()  # type: ignore[union-attr]
                    return
                names = [n for n, _ in problems]
                err = DependencyFailureError(
                    f"Cannot execute '{rec.name}' due to dependency failure",
                    failed_dependencies=names, root_cause=problems[0][1])
                self._settle_failed(rec, err)
                return
        kind = rec.kind
        if kind is not _BLOCK and (rec.files is not None or (
                self._file_outputs and rec.dependencies and self.implicit_data)):
            try:
                plan = self._file_plan(rec)
            except (OSError, ValueError) as exc:
                self._settle_failed(rec, exc)
                return
            rec.files = plan
            if plan is not None:
                args = place_markers(args, plan.task_dir)
                kwargs = place_markers(kwargs, plan.task_dir) if kwargs else kwargs
        rec.args, rec.kwargs = args, kwargs
        if self._tape is not None:
            rec.resolved = time.time()
        if self._observers:
            self._emit(EventType.RESOLVED, rec)
        if kind is _BLOCK:
            self._start_block(rec)
        elif kind is _EXECUTABLE:
            self._build_executable(rec)
        else:
            if self._journal is not None and self._replayed(rec, None):
                return
            opts: TaskOptions = rec.options
            td = rec.task_description
            inline = opts.inline
            rec.spec = TaskSpec(
                rec.uid, rec.name, _FUNCTION, function=rec.function, args=args, kwargs=kwargs,
                is_async=opts.is_async, description=td, workflow_id=rec.workflow_id,
                timeout=td.get("timeout", opts.timeout) if td else opts.timeout,
                inline=self.inline if inline is None else inline, files=rec.files)
            self._queue(rec, rec.resolved)  # queued in the same step: one clock reading

    def _build_executable(self, rec: TaskRecord) -> None:
        try:
            produced = rec.function(*rec.args, **rec.kwargs)
        except BaseException as exc:  # the body itself failed: that is the task's error
            self._settle_failed(rec, exc)
            return
        if inspect.isawaitable(produced):
            runner = self._loop.create_task(produced)  # type: ignore[union-attr]
            rec.runner = runner
            runner.add_done_callback(functools.partial(self._command_ready, rec))
            return
        self._finish_executable(rec, produced)

    def _command_ready(self, rec: TaskRecord, runner: asyncio.Task) -> None:
        rec.runner = None
        if self._active.get(rec.uid) is not rec:
            return
        if runner.cancelled():
            rec.future.cancel()  # type: ignore[union-attr]
            return
        exc = runner.exception()
        if exc is not None:
            self._settle_failed(rec, exc)
        else:
            self._finish_executable(rec, runner.result())
        self._flush()

    def _finish_executable(self, rec: TaskRecord, produced: Any) -> None:
        opts: TaskOptions = rec.options
        td = rec.task_description
        shell = bool(td.get("shell")) if td else False
        try:
            command = command_from(produced, shell, rec.name)
        except (TypeError, ValueError) as exc:
            self._settle_failed(rec, exc)
            return
        if self._journal is not None and self._replayed(rec, (command, shell)):
            return
        rec.command = command
        stdio = None
        if opts.capture_stdio:
            try:
                root = self._ensure_files_root()
            except OSError as exc:
                self._settle_failed(rec, exc)
                return
            stdio = (os.path.join(root, rec.uid + ".stdout"), os.path.join(root, rec.uid + ".stderr"))
        rec.spec = TaskSpec(
            rec.uid, rec.name, _EXECUTABLE, command=command, shell=shell, description=td,
            workflow_id=rec.workflow_id,
            timeout=td.get("timeout", opts.timeout) if td else opts.timeout,
            stdio=stdio, files=rec.files)
        self._queue(rec)

    def _replayed(self, rec: TaskRecord, command: Any) -> bool:
        """Settle ``rec`` from the journal if an earlier run recorded it; else remember its key."""
        journal = self._journal
        key = journal.key_for(rec, command)
        if key is None:
            return False
        hit, value = journal.lookup(key)
        if not hit:
            rec.journal_key = key
            return False
        if self._tape is not None:
            rec.submitted = time.time()
        if self._observers:
            self._emit(EventType.SUBMITTED, rec)
        self._settle_done(rec, value)
        return True

    def _start_block(self, rec: TaskRecord) -> None:
        ctx = contextvars.copy_context()
        ctx.run(self._block_var.set, rec)
        ctx.run(self._scope_var.set, rec.workflow_id)
        try:
            coro = rec.function(*rec.args, **rec.kwargs)
        except BaseException as exc:
            self._settle_failed(rec, exc)
            return
        rec.state = _RUNNING
        rec.started = time.time()
        runner = self._loop.create_task(coro, context=ctx)  # type: ignore[union-attr]
        rec.runner = runner
        runner.add_done_callback(functools.partial(self._block_finished, rec))
        if self._observers:
            self._emit(EventType.STARTED, rec)

    def _block_finished(self, rec: TaskRecord, runner: asyncio.Task) -> None:
        rec.runner = None
        if self._active.get(rec.uid) is not rec:
            return
        if runner.cancelled():
            rec.future.cancel()  # type: ignore[union-attr]
        elif runner.exception() is not None:
            self._settle_failed(rec, runner.exception())  # type: ignore[arg-type]
        else:
            self._settle_done(rec, runner.result())
        self._flush()
