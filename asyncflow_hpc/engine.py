"""WorkflowEngine: decorators, workflow scopes, dependency tracking, submission, shutdown.

The path of one task (see docs/concepts.md):

1. A decorated function is called. The engine records the call and returns a
   :class:`~asyncflow_hpc.tasks.TaskFuture` at once.
2. Futures found in the arguments are dependencies. Each unfinished one gets the new task in
   its list of dependents; nothing polls.
3. When the last dependency settles, the arguments are resolved and a backend-neutral
   :class:`~asyncflow_hpc.tasks.TaskSpec` is queued. Queued specs go to their backend in
   batches: at the end of the callback that made them ready, or — for tasks created by user
   code — once per loop iteration.
4. The backend reports state changes through one :class:`~asyncflow_hpc.backends.base.Reporter`
   on the engine's loop; the engine settles the future and wakes the dependents.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import logging
import math
import os
import shlex
import signal
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, TypeVar

from .backends import create_backend_from_env
from .backends.base import ExecutionBackend, Reporter
from .descriptions import check_engine_keys
from .errors import (
    ConfigurationError,
    DependencyFailureError,
    EngineError,
    TaskDescriptionError,
    UnknownBackendError,
)
from .events import Event, EventType, Observer
from .files import FilePlan, InputFile, OutputFile, StageIn, _FileMarker
from .safe_files import private_dir
from .tasks import TaskFuture, TaskKind, TaskRecord, TaskSpec, TaskState

if TYPE_CHECKING:
    from .journal import ResultStore

__all__ = ["WorkflowEngine"]

log = logging.getLogger("asyncflow_hpc")

F = TypeVar("F", bound=Callable[..., Any])

_DONE, _FAILED, _CANCELLED, _RUNNING = (
    TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, TaskState.RUNNING)
_FUNCTION, _EXECUTABLE, _BLOCK = TaskKind.FUNCTION, TaskKind.EXECUTABLE, TaskKind.BLOCK
# argument types that can never hold a future: skipped without a look inside
_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})
_CONTAINERS = (list, tuple, set, frozenset, dict, collections.deque)
#: the longest wait between two attempts, whatever the backoff asks
MAX_RETRY_DELAY = 3600.0
_SETTLED, _CANCEL = object(), object()  # kinds of follow-up work in WorkflowEngine._work


class _TaskOptions:
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


class _Opening:
    """Result of :meth:`WorkflowEngine.create`: awaitable, and usable with ``async with``."""

    def __init__(self, engine: WorkflowEngine) -> None:
        self._engine = engine

    def __await__(self):
        return self._engine.start().__await__()

    async def __aenter__(self) -> WorkflowEngine:
        return await self._engine.start()

    async def __aexit__(self, *exc: object) -> None:
        await self._engine.shutdown()


class WorkflowEngine:
    """Runs decorated tasks on one or more backends, tracking dependencies between them.

    Create it inside a running event loop::

        flow = await WorkflowEngine.create(backend=await LocalExecutionBackend(ThreadPoolExecutor()))
        ...
        await flow.shutdown()

    or ``async with WorkflowEngine.create() as flow:``. With no backend the engine reads
    ``ASYNCFLOW_HPC_BACKEND`` (``local``, ``dryrun``, ``radical``), so one campaign script runs
    unchanged on a laptop and on a cluster.

    ``journal=`` is the engine's result store: a path (a crash-safe
    :class:`~asyncflow_hpc.journal.Journal` there) or any object with the
    :class:`~asyncflow_hpc.journal.ResultStore` methods. The engine asks it before a task runs
    (a recorded result settles the task without running it) and tells it after the task
    succeeds; a store that cannot record stops the run with an :class:`EngineError`.
    """

    def __init__(
        self,
        backend: ExecutionBackend | Iterable[ExecutionBackend] | None = None,
        dry_run: bool = False,
        implicit_data: bool = True,
        uid: str | None = None,
        work_dir: str | os.PathLike | None = None,
        *,
        install_signal_handlers: bool = True,
        observers: Iterable[Observer] = (),
        telemetry: str | os.PathLike | None = None,
        progress: str | None = None,
        journal: str | os.PathLike | ResultStore | None = None,
        inline: bool | None = None,
        keep_components: bool | None = None,
    ) -> None:
        self.uid = uid or f"engine.{uuid.uuid4().hex[:8]}"
        if not isinstance(self.uid, str) or not self.uid or os.sep in self.uid:
            raise ConfigurationError(f"uid= must be a non-empty name without '/', got {uid!r}")
        # inline=True: async def bodies run on this loop (fast path for bodies that never block)
        self.inline = env_flag("ASYNCFLOW_HPC_INLINE", inline, default=False)
        self.dry_run = dry_run
        self.implicit_data = implicit_data
        # an explicit work_dir holds backend state (RP sessions, sandboxes); without one the
        # engine works in the current directory and backends pick private folders themselves
        self._work_dir_given = work_dir is not None
        # absolute: task directories, staged links and stdio paths must not depend on a cwd
        self.work_dir = Path(work_dir).absolute() if work_dir is not None else Path.cwd()
        self._backend_arg = backend
        self._install_signals = install_signal_handlers
        self.backends: dict[str, ExecutionBackend] = {}
        self._default_backend: ExecutionBackend | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # every task and block until shutdown (compact once finished), or only live ones
        self.components = Components(
            keep=env_flag("ASYNCFLOW_HPC_KEEP_COMPONENTS", keep_components, default=True))
        # files between tasks: declared outputs per task uid, and the last producer per name
        self._file_outputs: dict[str, tuple[str, ...]] = {}
        self._producer_by_name: dict[str, str] = {}
        self._files_root_ready = False
        self._thread_id: int | None = None
        self._fatal: BaseException | None = None  # set when the run must stop (journal lost)
        self._active: dict[str, TaskRecord] = {}
        self._outbox: dict[ExecutionBackend, list[TaskSpec]] = {}
        self._flush_scheduled = False
        self._flushing = False
        self._counter = 0
        self._observers: list[Observer] = list(observers)
        # the tape (see attach_tape): completed records, steps stamped on them, for telemetry
        self._tape: list[TaskRecord] | None = None
        self._tape_rare: Any = None
        self._tape_full: Any = None
        self._tape_limit = 1 << 62
        # add-ons configured by argument or environment (see attachments.configure): the
        # result store (journal) and the attachments (telemetry, progress) closed at shutdown
        self._addon_options = {"telemetry": telemetry, "progress": progress, "journal": journal}
        self._attachments: list[Any] = []
        self._journal: ResultStore | None = None
        # per-engine context: one engine's scope never leaks into another's tasks
        self._scope_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
            f"asyncflow_hpc.scope.{self.uid}", default=None)
        self._block_var: contextvars.ContextVar[TaskRecord | None] = contextvars.ContextVar(
            f"asyncflow_hpc.block.{self.uid}", default=None)
        self._started = False
        self._closing = False
        self._closed = False
        self._signal_handlers: dict[int, Any] = {}
        self._owner_task: asyncio.Task | None = None
        self._retry_handles: set[asyncio.TimerHandle] = set()
        self._work: collections.deque[tuple[object, TaskRecord]] = collections.deque()
        self._working = False
        self.counts = {"submitted": 0, "done": 0, "failed": 0, "cancelled": 0}

    # ------------------------------------------------------------------ life cycle
    @classmethod
    def create(
        cls,
        backend: ExecutionBackend | Iterable[ExecutionBackend] | None = None,
        dry_run: bool = False,
        implicit_data: bool = True,
        uid: str | None = None,
        work_dir: str | os.PathLike | None = None,
        **options: Any,
    ) -> _Opening:
        """Make and start an engine: ``await WorkflowEngine.create(...)`` or ``async with``."""
        return _Opening(cls(backend, dry_run, implicit_data, uid, work_dir, **options))

    async def start(self) -> WorkflowEngine:
        """Start the backends and bind them to this engine's loop (idempotent)."""
        if self._started:
            return self
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._owner_task = asyncio.current_task()
        if self._work_dir_given:
            self._private_work_dir()
        backends = await self._resolve_backends(self._backend_arg)
        reporter = Reporter(self._on_report, self._loop)
        for b in backends:
            await b.start()
            if b.name in self.backends:
                raise ConfigurationError(
                    f"two backends are named {b.name!r}; give each a distinct name=")
            b.bind(reporter)
            self.backends[b.name] = b
        self._default_backend = backends[0]
        from .attachments import configure

        try:
            self._journal, self._attachments = configure(self, **self._addon_options)
        except BaseException:  # a refused journal or log: nothing may be left running
            await self._stop_backends()
            raise
        self._started = True
        if self._install_signals and threading.current_thread() is threading.main_thread():
            self._install_signal_handlers()
        log.debug("engine %s started with backends %s", self.uid, list(self.backends))
        return self

    def _private_work_dir(self) -> Path:
        """The explicit work directory, created owner-only (0700) when it does not exist."""
        private_dir(self.work_dir)  # 0700 with the parents it makes; refused if others may write
        return self.work_dir

    async def _resolve_backends(self, arg: Any) -> list[ExecutionBackend]:
        if arg is None:
            if self.dry_run:
                from .backends.noop import NoopExecutionBackend
                return [NoopExecutionBackend()]
            return [await create_backend_from_env(
                work_dir=self.work_dir if self._work_dir_given else None)]
        if isinstance(arg, ExecutionBackend):
            return [arg]
        if inspect.isawaitable(arg):
            return await self._resolve_backends(await arg)
        if isinstance(arg, Iterable) and not isinstance(arg, (str, bytes)):
            out = [b for b in arg]
            if out and all(isinstance(b, ExecutionBackend) for b in out):
                return out
        raise ConfigurationError(
            f"backend= must be an ExecutionBackend or a list of them, got {arg!r}")

    async def __aenter__(self) -> WorkflowEngine:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def shutdown(self, skip_execution_backend: bool = False) -> None:
        """Cancel unfinished tasks, stop the backends, restore signal handlers. Idempotent."""
        if self._closed or self._closing:
            return
        self._closing = True
        try:
            self._cancel_all()
            await self._close_attachments()
            if not skip_execution_backend:
                await self._stop_backends()
        finally:
            self._restore_signal_handlers()
            self._closed = True
            self._closing = False

    def _cancel_all(self) -> None:
        for h in self._retry_handles:
            h.cancel()
        self._retry_handles.clear()
        # cancel blocks first (they cancel what they submitted), then the rest
        for rec in sorted(self._active.values(), key=lambda r: r.kind is not _BLOCK):
            fut = rec.future
            if fut is not None and not fut.done():
                fut.cancel()
        self._outbox.clear()

    async def _close_attachments(self) -> None:
        attachments, self._attachments = self._attachments, []
        if self._journal is not None:  # closed last: it keeps what the others may still report
            attachments.insert(0, self._journal)
            self._journal = None
        for att in reversed(attachments):
            try:
                await att.close()
            except Exception:
                log.exception("closing %r failed", att)

    async def _stop_backends(self) -> None:
        for b in self.backends.values():
            try:
                await b.shutdown()
            except Exception:  # one backend's failure must not keep the others up
                log.exception("backend %s failed to shut down", b.name)

    @property
    def is_running(self) -> bool:
        return self._started and not self._closed

    @property
    def backend(self) -> ExecutionBackend | None:
        """The default backend (the first one given)."""
        return self._default_backend

    def _backend_named(self, name: str | None) -> ExecutionBackend | None:
        """The backend ``name`` (the default one for None); None before start or if unknown."""
        if name is None:
            return self._default_backend
        return self.backends.get(name)

    def _backend_rejects(self, opts: _TaskOptions, name: str,
                         call_td: Mapping | None) -> ConfigurationError | None:
        """The task's backend checks the keys it has not seen: the declared
        ``task_description`` once per backend, a call's own one every time."""
        backend = self.backends[name]
        try:
            if opts.task_description and opts.td_checked_on != name:
                backend.check_task_description(opts.task_description, opts.name)
                opts.td_checked_on = name
            if call_td:
                backend.check_task_description(call_td, opts.name)
        except ConfigurationError as exc:
            return exc
        return None

    @property
    def files_root(self) -> Path:
        """``{work_dir}/{uid}``: captured stdio files and the directories of file tasks."""
        return self.work_dir / self.uid

    def _ensure_files_root(self) -> str:
        root = self.files_root
        if not self._files_root_ready:
            private_dir(root)
            self._files_root_ready = True
        return str(root)

    # ------------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> None:
        loop = self._loop
        assert loop is not None
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            self._signal_handlers[sig] = previous

    def _restore_signal_handlers(self) -> None:
        loop = self._loop
        for sig, previous in self._signal_handlers.items():
            try:
                if loop is not None and not loop.is_closed():
                    loop.remove_signal_handler(sig)
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, RuntimeError, TypeError):
                pass
        self._signal_handlers.clear()

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        log.warning("asyncflow-hpc: received %s, cancelling %d unfinished task(s) and shutting down",
                    name, len(self._active))
        assert self._loop is not None
        self._loop.create_task(self._shutdown_after_signal(sig))

    async def _shutdown_after_signal(self, sig: int) -> None:
        """Stop the work first, then hand the signal to whoever handled it before us.

        Backends are stopped before any future is cancelled, so no user code can run (and
        end the program) while processes are still being killed.
        """
        if self._closed:
            return
        previous = self._signal_handlers.get(sig)
        self._closing = True  # refuse new submissions from here on
        await self._stop_backends()
        self._restore_signal_handlers()
        if previous in (signal.SIG_DFL, None):
            # the default action ends the process: save what must survive first
            await self._close_attachments()
            signal.raise_signal(sig)
            return
        # e.g. asyncio.run's SIGINT handler: cancels the main task -> KeyboardInterrupt
        signal.raise_signal(sig)
        self._closing = False
        await self.shutdown(skip_execution_backend=True)

    # ------------------------------------------------------------------ decorators
    def function_task(self, func: F | None = None, /, *, service: bool = False,
                      backend: str | None = None, capture_stdio: bool = False,
                      retries: int = 0, timeout: float | None = None,
                      task_description: Mapping | None = None,
                      retry_backoff: float = 0.0, inline: bool | None = None) -> Any:
        """Decorate a function whose body runs on a backend; the future yields its return value.

        The body (``def`` or ``async def``) runs off the engine's loop: in the backend's
        workers. ``inline=True`` runs an ``async def`` body on the engine's loop instead (the
        fast path, for bodies that never block); ``None`` follows the engine's ``inline=``.
        """
        return self._decorator(_FUNCTION, func, service=service, backend=backend,
                               capture_stdio=capture_stdio, retries=retries, timeout=timeout,
                               task_description=task_description, retry_backoff=retry_backoff,
                               inline=inline)

    def executable_task(self, func: F | None = None, /, *, service: bool = False,
                        backend: str | None = None, capture_stdio: bool = False,
                        retries: int = 0, timeout: float | None = None,
                        task_description: Mapping | None = None,
                        retry_backoff: float = 0.0) -> Any:
        """Decorate a function that returns a command line; the future yields its stdout."""
        return self._decorator(_EXECUTABLE, func, service=service, backend=backend,
                               capture_stdio=capture_stdio, retries=retries, timeout=timeout,
                               task_description=task_description, retry_backoff=retry_backoff,
                               inline=None)

    def block(self, func: F | None = None, /, *, service: bool = False,
              backend: str | None = None, capture_stdio: bool = False) -> Any:
        """Decorate an ``async def`` that composes tasks; calling it returns a future too."""
        return self._decorator(_BLOCK, func, service=service, backend=backend,
                               capture_stdio=capture_stdio, retries=0, timeout=None,
                               task_description=None, retry_backoff=0.0, inline=None)

    def _decorator(self, kind: TaskKind, func: Callable | None, **kw: Any) -> Any:
        def wrap(f: Callable) -> Callable[..., TaskFuture]:
            opts = _TaskOptions(kind, f, engine=self, **kw)
            call = self._call

            @functools.wraps(f)
            def make_task(*args: Any, **kwargs: Any) -> TaskFuture:
                return call(opts, args, kwargs)

            make_task.task_options = opts  # type: ignore[attr-defined]
            return make_task

        return wrap if func is None else wrap(func)

    # ------------------------------------------------------------------ scopes
    @asynccontextmanager
    async def workflow_scope(self, workflow_id: str | None = None) -> AsyncIterator[str]:
        """Tag every task submitted inside with ``workflow_id`` (made up when omitted)."""
        if workflow_id is None:
            workflow_id = f"wf-{uuid.uuid4().hex[:8]}"
        elif not isinstance(workflow_id, str) or not workflow_id:
            raise ConfigurationError(f"workflow_id must be a non-empty string, got {workflow_id!r}")
        token = self._scope_var.set(workflow_id)
        try:
            yield workflow_id
        finally:
            try:
                self._scope_var.reset(token)
            except ValueError:  # exited in another context (e.g. generator closed late)
                self._scope_var.set(None)

    @property
    def journal(self) -> ResultStore | None:
        """The result store in use (``journal=``, or ``ASYNCFLOW_HPC_JOURNAL``), if any."""
        return self._journal

    @property
    def current_workflow_id(self) -> str | None:
        return self._scope_var.get()

    # ------------------------------------------------------------------ observers
    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(event)`` for every task event; returns a function that unsubscribes."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def attach_tape(self, on_rare: Callable[[str, TaskRecord, BaseException | None], None],
                    on_full: Callable[[], None], limit: int = 2048,
                    ) -> tuple[list[TaskRecord], Callable[[], None]]:
        """A cheaper feed than an observer, for one high-rate consumer (telemetry).

        Returns ``(tape, detach)``. While attached, the engine appends a record to ``tape``
        when its task completes, and stamps the time of every step on the record
        (``resolved``, ``queued``, ``submitted``; ``created``, ``started`` and ``finished``
        are always kept): one append per task instead of a call per event. The consumer
        drains the list (clearing it in place) and reads the unfinished records
        (:meth:`active_records`) as often as it wants their progress. The other ends, and
        retries, go to ``on_rare(type, record, error)`` synchronously, before the record
        changes (TaskFailed, TaskCanceled: before ``finished`` is stamped; TaskRetried: before
        the next attempt's stamps overwrite this one's). ``on_full()`` is called when the tape
        holds ``limit`` records during a burst that does not give the loop back. Callbacks
        must not raise.
        """
        if self._tape is not None:
            raise RuntimeError("a tape is already attached to this engine")
        tape: list[TaskRecord] = []
        self._tape = tape
        self._tape_rare, self._tape_full, self._tape_limit = on_rare, on_full, max(1, limit)

        def detach() -> None:
            if self._tape is tape:
                self._tape = self._tape_rare = self._tape_full = None

        return tape, detach

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

    # ------------------------------------------------------------------ calls
    def _call(self, opts: _TaskOptions, args: tuple, kwargs: dict) -> TaskFuture:
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

        deps, markers = _find_futures(args, kwargs) if (args or kwargs) else (None, None)
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
                    dep_uids.append(_future_name(d))
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
                args = _resolve(args, problems)
                kwargs = _resolve(kwargs, problems) if kwargs else kwargs
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
                args = _place_markers(args, plan.task_dir)
                kwargs = _place_markers(kwargs, plan.task_dir) if kwargs else kwargs
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
            opts: _TaskOptions = rec.options
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
        opts: _TaskOptions = rec.options
        td = rec.task_description
        shell = bool(td.get("shell")) if td else False
        try:
            command = _command_from(produced, shell, rec.name)
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

    # ------------------------------------------------------------------ submission
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
                   node: str | None) -> None:
        """The backends' single entry point (always on the loop).

        Nothing raised by the engine's own completion, retry or journal code may leave a
        future pending: such a failure fails the task with an :class:`EngineError`.
        """
        try:
            self._report(uid, state, value, error, node)
        except Exception as exc:  # noqa: BLE001 - a bug of ours, or a hostile exception object
            rec = self._active.get(uid)
            log.exception("asyncflow-hpc failed while handling a report about %s", uid)
            if rec is not None:
                self._settle_failed(rec, EngineError(
                    f"asyncflow-hpc failed while completing task {rec.name!r} ({uid}): "
                    f"{_safe_text(exc)}"))

    def _report(self, uid: str, state: TaskState, value: Any, error: BaseException | None,
                node: str | None) -> None:
        rec = self._active.get(uid)
        if rec is None:
            return  # already settled (cancelled, or shut down)
        if node is not None:
            rec.node = node
        if state is _DONE:
            self._settle_done(rec, value)
        elif state is _RUNNING:
            if rec.state is not _RUNNING:
                rec.state = _RUNNING
                rec.started = time.time()
                if self._observers:
                    self._emit(EventType.STARTED, rec)
            return
        elif state is _FAILED:
            if self._should_retry(rec, error):
                return
            self._settle_failed(rec, error if error is not None else RuntimeError(
                f"task {rec.name!r} failed on backend {rec.backend!r} without an error"))
        elif state is _CANCELLED:
            rec.future.cancel()  # type: ignore[union-attr]
        if self._outbox:
            self._flush()

    def _should_retry(self, rec: TaskRecord, error: BaseException | None) -> bool:
        opts: _TaskOptions = rec.options
        td = rec.task_description
        retries = td.get("retries", opts.retries) if td else opts.retries
        if rec.error_history is None:
            rec.error_history = []
        rec.error_history.append(f"attempt {rec.attempts}: {type(error).__name__}: "
                                 f"{_safe_text(error)}")
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
            self._tape_rare(EventType.RETRIED, rec, error)
        if self._observers:
            self._emit(EventType.RETRIED, rec, error)
        log.info("retrying %s (%s) after attempt %d failed: %s", rec.name, rec.uid, rec.attempts,
                 _safe_text(error))
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

    def _settle_done(self, rec: TaskRecord, value: Any) -> None:
        fut = rec.future
        if rec.journal_key is not None and self._journal is not None:
            try:
                self._journal.record(rec.journal_key, rec, value)
            except Exception as exc:  # noqa: BLE001 - a full disk, a removed file...
                self._journal_failed(exc)
                return
        del self._active[rec.uid]
        rec.state = _DONE
        rec.finished = time.time()
        self.counts["done"] += 1
        if fut is not None and not fut.done():
            fut.set_result(value)
        tape = self._tape
        if tape is not None:
            tape.append(rec)
            if len(tape) >= self._tape_limit:
                self._tape_full()
        if self._observers:
            self._emit(EventType.COMPLETED, rec, value=value)
        self._release(rec)

    def _settle_failed(self, rec: TaskRecord, error: BaseException) -> None:
        fut = rec.future
        if self._active.pop(rec.uid, None) is None:
            return
        if self._tape is not None:  # before the record is stamped finished: see attach_tape
            self._tape_rare(EventType.FAILED, rec, error)
        rec.state = _FAILED
        rec.finished = time.time()
        self.counts["failed"] += 1
        if fut is not None and not fut.done():
            if isinstance(error, (KeyboardInterrupt, SystemExit, StopIteration,
                                  StopAsyncIteration, GeneratorExit)):
                # the same on every path: a future cannot carry these as themselves
                wrapped = RuntimeError(f"task {rec.name!r} raised {type(error).__name__}"
                                       f"{': ' + _safe_text(error) if error.args else ''}")
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
                          f"({_safe_text(exc)}); the run stops so that no result goes "
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
        if self._active.pop(rec.uid, None) is None:
            return
        if self._tape is not None:  # before the record is stamped finished: see attach_tape
            self._tape_rare(EventType.CANCELED, rec, None)
        rec.state = _CANCELLED
        rec.finished = time.time()
        self.counts["cancelled"] += 1
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
                        f"{_safe_text(exc)}"))
        finally:
            self._working = False

    # ------------------------------------------------------------------ introspection
    def task_states(self) -> dict[str, int]:
        """Counts of tasks by state, for progress displays."""
        running = sum(1 for r in self._active.values() if r.state is _RUNNING)
        return {
            "pending": len(self._active) - running,
            "running": running,
            "done": self.counts["done"],
            "failed": self.counts["failed"],
            "cancelled": self.counts["cancelled"],
        }

    def __repr__(self) -> str:
        return (f"<WorkflowEngine {self.uid} backends={list(self.backends)} "
                f"active={len(self._active)}>")


# ---------------------------------------------------------------------- helpers
class Components(Mapping):
    """``uid -> record`` for the tasks and blocks of one engine.

    ``keep=True`` (the default, as in radical.asyncflow): every task until the engine is
    gone; a finished one is held as a :class:`~asyncflow_hpc.tasks.TaskSummary` (about 100
    bytes, no arguments or result), so a script may iterate ``flow.components.values()`` after
    dropping its futures. ``keep=False``: only records still alive (unfinished, or whose
    future the user holds), held weakly and swept in amortised batches, for campaigns of many
    millions of tasks.
    """

    __slots__ = ("_recs", "_keep", "_sweep_at")

    def __init__(self, keep: bool = True) -> None:
        self._recs: dict[str, Any] = {}
        self._keep = keep
        self._sweep_at = 4096

    def _add(self, uid: str, rec: TaskRecord) -> None:
        recs = self._recs
        if self._keep:
            recs[uid] = rec
            return
        recs[uid] = weakref.ref(rec)
        if len(recs) >= self._sweep_at:
            self._sweep()

    def _finished(self, rec: TaskRecord) -> None:
        if self._keep:
            self._recs[rec.uid] = rec.summary()

    def _sweep(self) -> None:
        self._recs = {k: r for k, r in self._recs.items() if r() is not None}
        self._sweep_at = max(4096, 2 * len(self._recs))

    def __getitem__(self, uid: str) -> Any:
        rec = self._recs[uid]
        if self._keep:
            return rec
        rec = rec()
        if rec is None:
            raise KeyError(f"{uid} (finished, and its future is no longer referenced; "
                           "keep_components=True keeps it)")
        return rec

    def __iter__(self):
        if self._keep:
            return iter(list(self._recs))
        return (k for k, r in list(self._recs.items()) if r() is not None)

    def __len__(self) -> int:
        if self._keep:
            return len(self._recs)
        return sum(1 for r in self._recs.values() if r() is not None)

    def __contains__(self, uid: object) -> bool:
        r = self._recs.get(uid)  # type: ignore[arg-type]
        if self._keep or r is None:
            return r is not None
        return r() is not None


def env_flag(var: str, value: bool | None, *, default: bool) -> bool:
    """An on/off option: the argument when given, else the environment variable, else default."""
    if value is not None:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{var.split('ASYNCFLOW_HPC_')[-1].lower()}= must be True "
                                     f"or False, got {value!r}")
        return value
    text = os.environ.get(var, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{var}={text!r} is not a switch: use 1/0, true/false, yes/no, on/off")


def _find_futures(args: tuple, kwargs: dict) -> tuple[list[asyncio.Future] | None, list | None]:
    """Futures (each once) and file markers in the arguments, also inside containers."""
    found: list[asyncio.Future] | None = None
    markers: list | None = None
    seen: set[int] | None = None
    stack: list[Any] = []
    for a in args:
        if type(a) not in _ATOMS:
            stack.append(a)
    if kwargs:
        for a in kwargs.values():
            if type(a) not in _ATOMS:
                stack.append(a)
    visited: set[int] | None = None  # containers already searched (a structure may hold itself)
    while stack:
        a = stack.pop()
        if isinstance(a, asyncio.Future):
            if seen is None:
                seen, found = set(), []
            if id(a) not in seen:
                seen.add(id(a))
                found.append(a)  # type: ignore[union-attr]
        elif isinstance(a, _CONTAINERS):
            if visited is None:
                visited = set()
            elif id(a) in visited:
                continue
            visited.add(id(a))
            if isinstance(a, dict):
                for k in a:  # a future as a key is a dependency too
                    if isinstance(k, asyncio.Future):
                        stack.append(k)
                items = a.values()
            else:
                items = a
            for x in items:
                if type(x) not in _ATOMS:
                    stack.append(x)
        elif isinstance(a, _FileMarker):
            if markers is None:
                markers = []
            markers.append(a)
    return found, markers


def _place_markers(obj: Any, task_dir: str) -> Any:
    """The arguments with every file marker pointing into the task's directory."""
    t = type(obj)
    if t in _ATOMS:
        return obj
    if isinstance(obj, _FileMarker):
        return obj._placed(task_dir)
    if t is tuple:
        return tuple(_place_markers(x, task_dir) for x in obj)
    if t is list:
        return [_place_markers(x, task_dir) for x in obj]
    if t is dict:
        return {k: _place_markers(v, task_dir) for k, v in obj.items()}
    return obj


def _resolve(obj: Any, problems: list) -> Any:
    """Replace futures by their results, keeping container types; collect failed inputs.

    A container subclass is rebuilt faithfully (a copy of the object with its items
    replaced, so its own ``__init__``, ``default_factory`` or ``maxlen`` survive), or refused
    with a TypeError naming the type: never passed on with futures still inside.
    """
    t = type(obj)
    if t in _ATOMS:
        return obj
    if isinstance(obj, asyncio.Future):
        if obj.cancelled():
            problems.append((_future_name(obj), None))
            return None
        exc = obj.exception()
        if exc is not None:
            problems.append((_future_name(obj), exc))
            return None
        return obj.result()
    if t is tuple:
        return tuple(_resolve(x, problems) for x in obj)
    if t is list:
        return [_resolve(x, problems) for x in obj]
    if t is dict:
        return {_resolve(k, problems) if isinstance(k, asyncio.Future) else k:
                _resolve(v, problems) for k, v in obj.items()}
    if t is set or t is frozenset:
        return t(_resolve(x, problems) for x in obj)
    if isinstance(obj, _CONTAINERS):
        return _rebuild(obj, problems)
    return obj


def _rebuild(obj: Any, problems: list) -> Any:
    """A container subclass (or deque) with its items resolved; see :func:`_resolve`."""
    import copy

    t = type(obj)
    if not _holds_future(obj):
        return obj  # nothing to replace: hand it over as given
    try:
        if isinstance(obj, tuple):
            items = [_resolve(x, problems) for x in obj]
            new = t(*items) if hasattr(obj, "_fields") else t(items)
            if type(new) is t and len(new) == len(obj) and all(
                    a is b for a, b in zip(new, items, strict=False)):
                return new
        elif isinstance(obj, frozenset):
            items = [_resolve(x, problems) for x in obj]
            new = t(items)
            if type(new) is t and len(new) == len(set(map(id, items))):
                return new
        else:
            new = copy.copy(obj)  # keeps the type, attributes, default_factory, maxlen
            if type(new) is t:
                if isinstance(obj, dict):
                    new.clear()  # the type's own methods: OrderedDict keeps its order links
                    for k, v in obj.items():
                        key = _resolve(k, problems) if isinstance(k, asyncio.Future) else k
                        new[key] = _resolve(v, problems)
                    return new
                if isinstance(obj, list):
                    list.__setitem__(new, slice(None), [_resolve(x, problems) for x in obj])
                    return new
                if isinstance(obj, set):
                    set.clear(new)
                    set.update(new, (_resolve(x, problems) for x in obj))
                    return new
                if isinstance(obj, collections.deque):
                    new.clear()
                    new.extend(_resolve(x, problems) for x in obj)
                    return new
    except RecursionError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported below, naming the type
        raise TypeError(f"futures inside a {t.__module__}.{t.__qualname__} cannot be replaced "
                        f"by their results ({type(exc).__name__}: {exc}); pass them in a "
                        "list, tuple, set or dict") from exc
    raise TypeError(f"futures inside a {t.__module__}.{t.__qualname__} cannot be replaced by "
                    "their results faithfully; pass them in a list, tuple, set or dict")


def _holds_future(obj: Any) -> bool:
    found, _ = _find_futures((obj,), {})
    return bool(found)


def _safe_text(obj: object) -> str:
    """``str(obj)``, even for an object whose ``__str__`` raises."""
    try:
        return str(obj)
    except Exception:  # noqa: BLE001
        try:
            return f"<{type(obj).__name__} whose str() failed>"
        except Exception:  # noqa: BLE001
            return "<unprintable>"


def _future_name(fut: asyncio.Future) -> str:
    task = getattr(fut, "task", None)
    if isinstance(task, TaskRecord):
        return task.name
    if isinstance(fut, asyncio.Task):
        return fut.get_name()
    return repr(fut)


def _command_from(produced: Any, shell: bool, name: str) -> list[str] | str:
    if isinstance(produced, (list, tuple)):
        if not produced:
            raise ValueError(f"executable task {name!r} returned an empty command")
        argv = [os.fspath(x) if isinstance(x, os.PathLike) else str(x) for x in produced]
        return shlex.join(argv) if shell else argv
    if not isinstance(produced, str):
        raise TypeError(
            f"executable task {name!r} must return a command string (or argv list), got "
            f"{type(produced).__name__}")
    if not produced.strip():
        raise ValueError(f"executable task {name!r} returned an empty command")
    if shell:
        return produced
    argv = shlex.split(produced)
    if not argv:
        raise ValueError(f"executable task {name!r} returned an empty command")
    return argv
