"""The in-process RP client: session, pilot and task managers in this very process.

Threading model (why it looks like this):

* Every call into RP (import, Session, managers, submit, cancel, close) runs on ONE dedicated
  worker thread (the RP thread, a single-thread executor). RP calls take from milliseconds
  to tens of seconds and some block on network round trips; on the event loop they would
  stall every other coroutine. One thread also serialises them, which RP's managers expect.
* RP reports task and pilot states on its own listener threads. Those callbacks only look up
  the task and hand the outcome to the engine through ``Reporter.threadsafe`` (one
  ``call_soon_threadsafe``); they run ~15 times per task, so they do nothing else.
* ``submit`` is called on the loop. Specs are queued and flushed once per loop iteration
  (``call_soon``), so everything that became ready together is ONE ``tmgr.submit_tasks``.

The client process (:mod:`.process_child`) runs this same class on a loop of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..._threads import in_thread
from ...errors import BackendError, ConfigurationError, PilotFailedError
from ...safe_files import private_dir
from ...tasks import TaskKind, TaskSpec, TaskState
from ..base import Reporter
from . import cleanup
from . import translate as tr
from .cores import Cores
from .environment import ENV_LOCK, rp_environment, write_resource_configs
from .options import Options
from .outcomes import final_outcome, url_path
from .pilots import PilotWatch

__all__ = ["Entry", "InProcessClient"]

log = logging.getLogger("asyncflow_hpc.backends.radical")

FINAL = ("DONE", "FAILED", "CANCELED")
_FUNCTION, _EXECUTABLE = TaskKind.FUNCTION, TaskKind.EXECUTABLE
#: longest stretch of pure-Python work on the RP thread before it yields the GIL (seconds)
_GIL_SLICE = 0.002


class Entry:
    """One submitted task as the callbacks see it."""

    __slots__ = ("spec", "rp_uid", "pilot", "reporter", "cancel_requested", "raptor", "started")

    def __init__(self, spec: TaskSpec, rp_uid: str, pilot: str | None, reporter: Reporter,
                 raptor: str | None) -> None:
        self.spec = spec
        self.rp_uid = rp_uid
        self.pilot = pilot
        self.reporter = reporter
        self.cancel_requested = False
        self.raptor = raptor  # master uid for function tasks
        self.started = False  # reached AGENT_EXECUTING (it holds its cores)


class InProcessClient:
    """RP's client objects in this process, driven from the event loop.

    ``pack_call`` / ``unpack_result`` turn a function task's call into the raptor payload and
    its result back (the client process leaves both packed: the parent does that work, where
    the user's objects live). ``on_change`` is called, from any thread, whenever something
    :meth:`describe` reports changed (the client process forwards it to the parent).
    """

    pid = None  # RP's client runs in this process, not in a client process of its own

    def __init__(self, opts: Options, name: str, *,
                 pack_call: Callable[[TaskSpec], str] = tr.pack_call,
                 unpack_result: Callable[[Any], tuple[bool, Any]] = tr.unpack_result,
                 on_change: Callable[[], None] | None = None) -> None:
        self.opts = opts
        self.name = name
        self.pack_call = pack_call
        self.unpack_result = unpack_result
        self.on_change = on_change
        self.reporter: Reporter | None = None
        self.timings: dict[str, float] = {}
        # RP's objects and the client's state: public for its collaborators (Cores,
        # PilotWatch) and for run_in_client; written on the RP thread only
        self.rp_exec: concurrent.futures.ThreadPoolExecutor | None = None
        self.rp: Any = None  # the radical.pilot module
        self.session: Any = None
        self.pmgr: Any = None
        self.tmgr: Any = None
        self.pilot: Any = None
        self._session_uid: str | None = None
        self.pilot_sandbox: str | None = None
        self.cores_per_node = 0
        self.dead: PilotFailedError | None = None  # set when no pilot will come back
        self.own_pids: set[int] = set()  # processes RP forked from this one (proxy worker)
        self.cores = Cores(self)
        self.pilots = PilotWatch(self)
        # bookkeeping shared with RP's callback threads; single dict operations are atomic
        self.tasks: dict[str, Entry] = {}  # rp uid -> entry, unfinished only
        self._by_spec: dict[str, str] = {}  # spec uid -> rp uid of its latest attempt
        self._known_rp_uids: set[str] = set()
        # loop side
        self._pending: list[TaskSpec] = []
        self._flush_handle: asyncio.Handle | None = None
        self.closing = False

    def changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def on_rp_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` for the RP thread (from any thread); dropped once closing."""
        ex = self.rp_exec
        if ex is None or self.closing:
            return
        try:
            ex.submit(fn, *args)
        except RuntimeError:  # executor already shut down
            pass

    # ================================================================ life cycle
    async def start(self) -> None:
        self.rp_exec = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="asyncflow-rp")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.rp_exec, self._start_sync)
        except BaseException:
            # half-started RP (a session without pilot, ...) must not outlive the error
            await asyncio.shield(loop.run_in_executor(self.rp_exec, self._close_sync))
            self.rp_exec.shutdown(wait=False)
            self.rp_exec = None  # a later shutdown() has nothing left to do
            raise

    def _start_sync(self) -> None:
        t0 = time.monotonic()
        work_dir = self.opts.work_dir
        for folder in ("session", "sandbox", "config", "tmp"):
            private_dir(work_dir / folder)  # 0700, parents too; refused if others control it
        with ENV_LOCK:
            write_resource_configs(self.opts, os.environ.get("RADICAL_CONFIG_USER_DIR"))
            with rp_environment(work_dir, self.opts.batch_options):
                self._start_rp(t0)
        log.info("RADICAL-Pilot session %s, pilot %s on %s (work dir %s)", self._session_uid,
                 self.pilot.uid, self.opts.resource, work_dir)

    def _start_rp(self, t0: float) -> None:
        import radical.pilot as rp

        self.rp = rp
        self.timings["import"] = time.monotonic() - t0
        try:
            self.session = rp.Session()
        except Exception as exc:
            raise BackendError(f"RADICAL-Pilot session did not start: {exc}") from exc
        self._session_uid = self.session.uid
        self._remember_proxy_worker()
        self.timings["session"] = time.monotonic() - t0
        self.pmgr = rp.PilotManager(session=self.session)
        self.tmgr = rp.TaskManager(session=self.session)
        self.pmgr.register_callback(self.pilots.callback)
        self.tmgr.register_callback(self._task_cb)
        # before the pilot is submitted: the launcher component is the pilot's parent, so a
        # local agent and its tasks inherit the lower priority
        cleanup.lower_priority(self._session_uid, self.opts.work_dir, self.own_pids,
                               self.opts.nice)
        try:
            rcfg = self.session.get_resource_config(self.opts.resource)
        except Exception as exc:
            raise ConfigurationError(
                f"RADICAL-Pilot knows no resource {self.opts.resource!r}: {exc}") from exc
        self.cores_per_node = int((rcfg or {}).get("cores_per_node") or 0)
        self._submit_pilot()
        self.timings["pilot_submitted"] = time.monotonic() - t0

    def _remember_proxy_worker(self) -> None:
        """Remember the pid of the proxy worker RP forks for this session.

        RP's embedded proxy forks one worker per session (``multiprocessing``, no exec): the
        child carries this program's command line and none of RP's folders in its recorded
        environment, so only its pid identifies it if a close leaves it behind.
        """
        try:
            clients = self.session._proxy._clients  # private to RP: best effort
            self.own_pids.update(int(c["proc"].pid) for c in clients.values())
        except Exception:
            pass

    def _submit_pilot(self) -> None:
        pd = dict(self.opts.pilot)
        pd.setdefault("sandbox", str(self.opts.work_dir / "sandbox"))
        pilot = self.pmgr.submit_pilots(self.rp.PilotDescription(pd))
        self.pilot = pilot
        self.tmgr.add_pilots(pilot)
        try:
            self.pilot_sandbox = url_path(pilot.pilot_sandbox)
        except Exception:
            self.pilot_sandbox = None
        self.changed()

    async def wait_active(self) -> str:
        """Wait until the pilot runs (returns its state); raises PilotFailedError if it ended."""
        state = await asyncio.wrap_future(self.pilots.active)
        if state != "PMGR_ACTIVE":
            raise self.dead or PilotFailedError(self.pilot.uid, state, self.pilot_sandbox)
        return state

    async def call(self, fn: Callable[..., Any], args: tuple) -> Any:
        """``fn(self, *args)`` on a thread of its own."""
        if self.rp_exec is None:
            raise BackendError(f"backend {self.name!r} is not running")
        return await in_thread(fn, self, *args)

    async def shutdown(self) -> None:
        self.closing = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending.clear()
        if self.rp_exec is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.rp_exec, self._close_sync)
        finally:
            self.rp_exec.shutdown(wait=False)
            self._report_leftovers_cancelled()

    def _close_sync(self) -> None:
        """Shutdown order from the facts: tasks -> raptor -> pilots (terminate) -> session."""
        self.closing = True
        t0 = time.monotonic()
        tmgr, pmgr, session = self.tmgr, self.pmgr, self.session
        try:
            left = [u for u in list(self.tasks) if u not in self.cores.uids]
            if tmgr is not None and left:
                cleanup.quiet(tmgr.cancel_tasks, left)
            self.cores.stop()
            if pmgr is not None:
                # before session.close(): closing the task manager first would also stop the
                # component that cancels pilots, leaving a not-yet-active pilot orphaned
                cleanup.quiet(pmgr.close, terminate=True)
            if session is not None:
                cleanup.quiet(session.close, download=False)
        finally:
            self.timings["close"] = time.monotonic() - t0
            if self._session_uid:
                cleanup.kill_leftovers(self._session_uid, self.opts.work_dir, self.own_pids)
                cleanup.remove_id_counters(self._session_uid)
            self.changed()

    def _report_leftovers_cancelled(self) -> None:
        # the engine normally cancelled these already; a standalone user still hears back
        for uid in list(self.tasks):
            entry = self.tasks.pop(uid, None)
            if entry is not None and uid not in self.cores.uids:
                entry.reporter.threadsafe(entry.spec.uid, TaskState.CANCELLED)

    # ================================================================ submit / cancel
    def bind(self, reporter: Reporter) -> None:
        # one client may serve several engines in turn (each with its own loop): a flush
        # scheduled on a previous loop would never run, so hand its batch over now
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
            if self._pending and self.reporter is not None:
                batch, self._pending = self._pending, []
                self.on_rp_thread(self._submit_sync, batch, self.reporter)
        self.reporter = reporter

    def submit(self, specs: Sequence[TaskSpec]) -> None:
        reporter = self.reporter
        assert reporter is not None, "bind() comes first"
        if self.closing or self.rp_exec is None:
            err = BackendError(f"backend {self.name!r} is not running (not started, or shut "
                               "down)")
            for spec in specs:
                reporter.failed(spec.uid, err)
            return
        self._pending.extend(specs)
        if self._flush_handle is None:
            self._flush_handle = reporter.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        batch, self._pending = self._pending, []
        if batch:
            self.on_rp_thread(self._submit_sync, batch, self.reporter)

    def cancel(self, uid: str) -> None:
        for i, spec in enumerate(self._pending):
            if spec.uid == uid:
                del self._pending[i]
                return
        self.on_rp_thread(self._cancel_sync, uid)

    def _cancel_sync(self, spec_uid: str) -> None:
        rp_uid = self._by_spec.get(spec_uid)
        entry = self.tasks.get(rp_uid) if rp_uid else None
        if entry is None or entry.spec.uid != spec_uid:
            return
        entry.cancel_requested = True
        self.tasks.pop(rp_uid, None)  # the engine settled it; ignore RP's late reports
        cleanup.quiet(self.tmgr.cancel_tasks, [rp_uid])
        cores = self.cores
        if cores.held_exe or cores.held_fn or cores.exe_waiting:
            cores.rebalance()

    def _submit_sync(self, batch: list[TaskSpec], reporter: Reporter) -> None:
        """Runs on the RP thread: translate and submit a batch with one submit_tasks."""
        if self.closing:
            return
        if self.dead is not None:
            for spec in batch:
                reporter.threadsafe(spec.uid, TaskState.FAILED, error=self.dead)
            return
        cores = self.cores
        tds: list[Any] = []
        entries: list[Entry] = []
        pilot_uid = self.pilot.uid
        pause_at = time.perf_counter() + _GIL_SLICE
        for spec in batch:
            if time.perf_counter() > pause_at:
                # a big batch is tens of ms of pure Python: hand the GIL to the event loop
                # now and then instead of making it wait for the interpreter's 5 ms switch
                # (which another RP thread may win)
                time.sleep(0)
                pause_at = time.perf_counter() + _GIL_SLICE
            if spec.kind is _FUNCTION and cores.holds_functions():
                cores.held_fn.append(self._register(spec, pilot_uid, reporter, None))
                continue
            try:
                td, raptor = self.translate(spec)
                held = watch = False
                if spec.kind is _EXECUTABLE:
                    held, watch = cores.exe_fit(spec, td)
            except Exception as exc:  # bad value, unpicklable function, raptor trouble, ...
                reporter.threadsafe(spec.uid, TaskState.FAILED, error=exc)
                continue
            entry = self._register(spec, pilot_uid, reporter, raptor)
            td.uid = entry.rp_uid
            if held:
                cores.held_exe.append((entry, td))
                continue
            if watch:  # a raptor started now could take its cores before it gets them
                cores.exe_waiting.add(entry.rp_uid)
            tds.append(td)
            entries.append(entry)
        if tds:
            self.submit_tds(tds, entries)
        if cores.held_exe or cores.held_fn:
            cores.rebalance()

    def _register(self, spec: TaskSpec, pilot_uid: str, reporter: Reporter,
                  raptor: str | None) -> Entry:
        rp_uid = tr.rp_uid_for(spec.uid, self._known_rp_uids)
        self._known_rp_uids.add(rp_uid)
        entry = Entry(spec, rp_uid, pilot_uid, reporter, raptor)
        # registered BEFORE submit: RP's first callbacks can beat submit_tasks' return
        self.tasks[rp_uid] = entry
        self._by_spec[spec.uid] = rp_uid
        return entry

    def submit_tds(self, tds: list[Any], entries: list[Entry]) -> None:
        try:
            self.tmgr.submit_tasks(tds)
        except Exception as exc:
            err = BackendError(f"RADICAL-Pilot refused {len(tds)} task(s): {exc}")
            err.__cause__ = exc
            for entry in entries:
                if self.tasks.pop(entry.rp_uid, None) is not None:
                    entry.reporter.threadsafe(entry.spec.uid, TaskState.FAILED, error=err)

    def translate(self, spec: TaskSpec) -> tuple[Any, str | None]:
        """RP task description and raptor master uid (function tasks) for ``spec``."""
        rp = self.rp
        fields = tr.task_description(spec)
        if spec.files is not None:
            # sandbox = the task's directory; inputs staged by RP (for raptor tasks too: the
            # agent stages every task before scheduling it, and the worker runs the function
            # in its sandbox)
            fields.update(tr.staging_fields(spec, fields, {
                "link": rp.LINK, "transfer": rp.TRANSFER, "download": rp.DOWNLOAD}))
            tr.clear_stale_inputs(spec)
        if spec.kind is _EXECUTABLE:
            executable, arguments = tr.executable_fields(spec)
            fields.update(mode=rp.TASK_EXECUTABLE, executable=executable, arguments=arguments)
            fields.update(tr.stdio_fields(spec, fields))
            raptor = None
        elif spec.kind is _FUNCTION:
            raptor = self.cores.ensure_raptor()
            fields.update(mode=rp.TASK_FUNCTION, raptor_id=raptor,
                          function=rp.PythonTask(tr.REMOTE_CALL, (self.pack_call(spec),), {}))
        else:
            raise ConfigurationError(f"task {spec.name!r}: the radical backend runs function "
                                     f"and executable tasks, not {spec.kind.value!r}")
        try:
            return rp.TaskDescription(fields), raptor
        except Exception as exc:  # RP's own type checks (typeguard)
            raise ConfigurationError(
                f"task_description of task {spec.name!r} rejected by RADICAL-Pilot: {exc}") from exc

    # ================================================================ RP's task callback
    def _task_cb(self, task: Any, state: str) -> None:
        uid = task.uid
        entry = self.tasks.get(uid)
        if entry is None:
            if state in FINAL and uid in self.cores.uids:
                self.cores.raptor_ended(uid, state, task)
            return
        if state == "AGENT_EXECUTING":
            entry.reporter.threadsafe(entry.spec.uid, TaskState.RUNNING)
            entry.started = True
            self.cores.started(uid)
            return
        if state not in FINAL:
            return
        if self.tasks.pop(uid, None) is None:  # someone else (cancel, pilot watch) won
            return
        self.cores.finished(entry)
        spec = entry.spec
        try:
            outcome = final_outcome(spec, task, state, entry.cancel_requested,
                                    self.unpack_result, self.pilots.ended_pilot())
            entry.reporter.threadsafe(spec.uid, *outcome)
        except Exception as exc:  # never let a bad result kill RP's listener thread
            log.exception("reporting %s failed", uid)
            entry.reporter.threadsafe(spec.uid, TaskState.FAILED, error=exc)

    # ================================================================ introspection
    def rp_uid(self, spec_uid: str) -> str | None:
        """The RP uid of a task's latest attempt (None before it was submitted)."""
        return self._by_spec.get(spec_uid)

    @property
    def pilot_uid(self) -> str | None:
        """The current pilot's uid (a replacement pilot's after a restart)."""
        return self.pilot.uid if self.pilot is not None else None

    @property
    def session_uid(self) -> str | None:
        return self._session_uid

    def describe(self) -> dict[str, Any]:
        opts = self.opts
        return {
            "resource": opts.resource,
            "pilot": {k: v for k, v in opts.pilot.items() if k != "exit_on_error"},
            "pilot_uid": self.pilot_uid,
            "pilot_state": self.pilots.state(),
            "pilot_sandbox": self.pilot_sandbox,
            "session": self._session_uid,
            "work_dir": str(opts.work_dir),
            "raptor": dict(opts.raptor) or "auto",
            "raptor_master": self.cores.master_uid,
            "on_pilot_failure": opts.on_pilot_failure,
            "pilot_restarts": self.pilots.restarts,
            "unfinished_tasks": len(self.tasks),
            "timings": dict(self.timings),
        }
