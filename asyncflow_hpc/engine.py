"""WorkflowEngine: decorators, workflow scopes, observers, life cycle.

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

Steps 1-3 are in :mod:`._submission`, step 4 in :mod:`._settlement`, the signal handlers in
:mod:`._signals`: each a part of the one :class:`WorkflowEngine` class, which holds the state.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import functools
import inspect
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, TypeVar

from ._feeds import Feeds
from ._settlement import Settlement
from ._signals import SignalHandling
from ._submission import Submission, TaskOptions
from .backends import create_backend_from_env
from .backends.base import ExecutionBackend, Reporter
from .components import Components
from .errors import ConfigurationError
from .events import Observer
from .safe_files import private_dir
from .switches import env_flag
from .tasks import TaskFuture, TaskKind, TaskRecord, TaskSpec

if TYPE_CHECKING:
    from .journal import ResultStore

__all__ = ["WorkflowEngine"]

log = logging.getLogger("asyncflow_hpc")

F = TypeVar("F", bound=Callable[..., Any])

_FUNCTION, _EXECUTABLE, _BLOCK = TaskKind.FUNCTION, TaskKind.EXECUTABLE, TaskKind.BLOCK


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


class WorkflowEngine(Submission, Settlement, SignalHandling, Feeds):
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

    ``dashboard="[HOST:]PORT"`` (or ``ASYNCFLOW_HPC_DASHBOARD``) serves a live page of the
    run (:mod:`asyncflow_hpc.dashboard`; telemetry is switched on for it); its URL, with its
    access token, is printed and kept in ``flow.dashboard_url``.
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
        dashboard: str | None = None,
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
        self._note_listeners: list[Any] = []  # see subscribe_notes
        # the tape (see attach_tape): completed records, steps stamped on them, for telemetry
        self._tape: list[TaskRecord] | None = None
        self._tape_rare: Any = None
        self._tape_full: Any = None
        self._tape_limit = 1 << 62
        self._tapes: list[tuple] = []  # every consumer's (tape, on_rare, on_full, limit)
        self._more_tapes: list[tuple] = []  # all but the first (telemetry's, usually)
        # add-ons configured by argument or environment (see attachments.configure): the
        # result store (journal) and the attachments (telemetry, progress) closed at shutdown
        self._addon_options = {"telemetry": telemetry, "progress": progress, "journal": journal,
                               "dashboard": dashboard}
        self.dashboard_url: str | None = None  # set when a dashboard serves this engine
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
        self._retry_handles: set[asyncio.TimerHandle] = set()
        self._work: collections.deque[tuple[object, TaskRecord]] = collections.deque()
        self._working = False
        self.counts = {"submitted": 0, "done": 0, "failed": 0, "cancelled": 0}  # tasks
        self.block_counts = {"done": 0, "failed": 0, "cancelled": 0}

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
        if self._work_dir_given:
            self._private_work_dir()
        backends = await self._resolve_backends(self._backend_arg)
        reporter = Reporter(self._on_report, self._loop, self._on_note)
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
            try:
                if not skip_execution_backend:
                    await self._stop_backends()
            finally:  # after the backends: what they say as they stop is recorded too
                await self._close_attachments()
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

    def _backend_rejects(self, opts: TaskOptions, name: str,
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
            opts = TaskOptions(kind, f, engine=self, **kw)
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

    def __repr__(self) -> str:
        return (f"<WorkflowEngine {self.uid} backends={list(self.backends)} "
                f"active={len(self._active)}>")
