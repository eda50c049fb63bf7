"""RADICAL-Pilot backend: tasks run in a pilot job (local fork, SLURM, PBS, ...).

Where RP's client runs (``client=``, or ``$ASYNCFLOW_HPC_RP_CLIENT``):

* ``"process"`` (default): in a child process (``_radical_host``), talking to this one over
  a socket (``_radical_client``). RP's client threads decode every state update (msgpack,
  string conversions) while holding the GIL; in the engine's process a burst of updates
  stalls the event loop for 40-100 ms. In a child process they stall nobody.
* ``"thread"``: in this process, as described below. The child process runs exactly this
  code too, on a loop of its own.

Threading model of the in-process client (why it looks like this):

* Every call into RP (import, Session, managers, submit, cancel, close) runs on ONE dedicated
  worker thread (``self._rp``, a single-thread executor). RP calls take from milliseconds to
  tens of seconds and some block on network round trips; on the event loop they would stall
  every other coroutine. One thread also serialises them, which RP's managers expect.
* RP reports task and pilot states on its own listener threads. Those callbacks only look up
  the task and hand the outcome to the engine through ``Reporter.threadsafe`` (one
  ``call_soon_threadsafe``); they run ~15 times per task, so they do nothing else.
* ``submit`` is called on the loop. Specs are queued and flushed once per loop iteration
  (``call_soon``), so everything that became ready together is ONE ``tmgr.submit_tasks``.

RP is never imported at module import time: ``import asyncflow_hpc`` stays cheap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._threads import in_thread
from ..errors import (
    BackendError,
    ConfigurationError,
    ExecutableNotFoundError,
    PilotFailedError,
    TaskExecutionError,
    TaskTimeoutError,
)
from ..hpc.launchers import node_failure as launcher_node_failure
from ..tasks import TaskKind, TaskSpec, TaskState
from . import _radical_translate as tr
from .base import ExecutionBackend, Reporter
from .radical_keys import TASK_FIELDS

if TYPE_CHECKING:
    from ._radical_client import ProcessClient

__all__ = ["RadicalPilotBackend", "leftover_processes"]

log = logging.getLogger(__name__)

DEFAULT_RESOURCE = "local.localhost"
ENV_RESOURCE = "ASYNCFLOW_HPC_RESOURCE"
#: pilot runtime (minutes) when none is given: RP's own default (10) ends most campaigns early
DEFAULT_RUNTIME = 60
ENV_CLIENT = "ASYNCFLOW_HPC_RP_CLIENT"
CLIENT_MODES = ("process", "thread")
#: where RP's client runs unless ``client=`` or $ASYNCFLOW_HPC_RP_CLIENT says otherwise
DEFAULT_CLIENT = "process"
_PILOT_FINAL = ("DONE", "FAILED", "CANCELED")
_RUNNING, _DONE, _FAILED, _CANCELLED = (TaskState.RUNNING, TaskState.DONE, TaskState.FAILED,
                                        TaskState.CANCELLED)
_FUNCTION, _EXECUTABLE = TaskKind.FUNCTION, TaskKind.EXECUTABLE
_SHORTENED = "[... CONTENT SHORTENED ...]"
#: longest stretch of pure-Python work on the RP thread before it yields the GIL (seconds)
_GIL_SLICE = 0.002

# RP reads its settings from the process environment when the session and its component
# processes start. Two backends starting at once would see each other's values: serialise.
_ENV_LOCK = threading.Lock()


class _Entry:
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


class RadicalPilotBackend(ExecutionBackend):
    """Run tasks on a RADICAL-Pilot pilot.

    ``backend = await RadicalPilotBackend({"resource": "local.localhost", "cores": 4})`` or
    with keywords: ``RadicalPilotBackend(resource="anl.polaris", nodes=2, runtime=60,
    queue="debug", project="MYPROJ")``. Pilot keys are PilotDescription fields (``runtime`` in
    minutes; ``account`` is accepted for ``project``); an unknown key raises
    :class:`ConfigurationError` naming the right one.

    ``raptor={...}`` sizes the function-task executor (see ``_radical_translate.RAPTOR_KEYS``);
    by default one master and one worker with about half the pilot's cores start on the first
    function task. ``on_pilot_failure="fail"`` fails unfinished tasks with
    :class:`PilotFailedError` when the pilot ends; ``"resubmit"`` starts a new pilot (at most
    ``max_pilot_restarts`` times) and requeues them. ``site_config`` adds or overrides RP
    resource configs: ``{"mysite.cluster": {...resource entry...}}``.

    ``client="process"`` (default; or ``$ASYNCFLOW_HPC_RP_CLIENT``) runs RP's client
    (session, managers, their threads) in a child process, so that RP's GIL-heavy threads
    never hold up the event loop; ``client="thread"`` runs it in this process. Both behave
    the same to the engine. Everything that can be checked without RP is checked here, at
    construction, before any process or thread starts. ``nice`` (default 10) lowers the CPU
    priority of RP's processes (not of the client process), so that the event loop gets a
    core first on a small machine.
    """

    name = "radical"
    task_keys = TASK_FIELDS | {"cwd", "env", "stdin"}

    @classmethod
    def from_env(cls, work_dir: str | os.PathLike | None = None) -> RadicalPilotBackend:
        """A pilot as the environment describes it.

        A site (``$ASYNCFLOW_HPC_SITE``, set by ``asyncflow-hpc run --site`` or
        ``--in-allocation``) supplies the resource name, the generated RP resource config and
        the pilot's nodes, runtime, queue and project (see
        :func:`asyncflow_hpc.hpc.resources.radical_backend_options`); without a site,
        ``$ASYNCFLOW_HPC_RESOURCE`` names an RP resource.
        """
        options: dict[str, Any] = {}
        if work_dir is not None:
            options["work_dir"] = work_dir
        resource = os.environ.get(ENV_RESOURCE, "").strip()
        if os.environ.get("ASYNCFLOW_HPC_SITE", "").strip():
            from ..hpc.resources import radical_backend_options

            options.update(radical_backend_options())
            if resource and resource != options.get("resource"):
                raise ConfigurationError(
                    f"ASYNCFLOW_HPC_SITE={os.environ['ASYNCFLOW_HPC_SITE']!r} and "
                    f"{ENV_RESOURCE}={resource!r} both name where to run: give one "
                    "(--site or --resource)")
        elif resource:
            options["resource"] = resource
        return cls(**options)

    def __init__(
        self,
        resources: Mapping[str, Any] | None = None,
        *,
        raptor: Mapping[str, Any] | None = None,
        work_dir: str | os.PathLike | None = None,
        on_pilot_failure: str = "fail",
        max_pilot_restarts: int = 1,
        site_config: Mapping[str, Mapping[str, Any]] | None = None,
        name: str | None = None,
        nice: int = 10,
        client: str | None = None,
        **pilot_keywords: Any,
    ) -> None:
        super().__init__()
        if name is not None:
            self.name = name
        merged = dict(resources or {})
        for key, value in pilot_keywords.items():
            if key in merged:
                raise ConfigurationError(f"pilot keyword {key!r} given twice")
            merged[key] = value
        pd = tr.validate_pilot_keywords(merged)  # raises before RP is ever loaded
        if importlib.util.find_spec("radical") is None or \
                importlib.util.find_spec("radical.pilot") is None:
            raise ConfigurationError(
                "the RADICAL-Pilot backend needs radical.pilot, which is not installed; "
                "pip install 'asyncflow-hpc[radical]'")
        if not pd.get("resource"):
            pd["resource"] = os.environ.get(ENV_RESOURCE, "").strip() or DEFAULT_RESOURCE
        if "." not in pd["resource"]:
            raise ConfigurationError(
                f"resource {pd['resource']!r} must be '<site>.<entry>', e.g. 'local.localhost'")
        if not pd.get("nodes") and not pd.get("cores"):
            pd["nodes"] = 1
        pd.setdefault("runtime", DEFAULT_RUNTIME)
        pd["exit_on_error"] = False  # RP would otherwise SIGTERM this process on pilot failure
        if on_pilot_failure not in ("fail", "resubmit"):
            raise ConfigurationError(
                f"on_pilot_failure must be 'fail' or 'resubmit', got {on_pilot_failure!r}")
        if isinstance(max_pilot_restarts, bool) or not isinstance(max_pilot_restarts, int) \
                or max_pilot_restarts < 0:
            raise ConfigurationError(
                f"max_pilot_restarts must be an integer >= 0, got {max_pilot_restarts!r}")
        if site_config is not None and not (
                isinstance(site_config, Mapping)
                and all(isinstance(k, str) and k.count(".") == 1 for k in site_config)):
            raise ConfigurationError(
                "site_config must map '<site>.<entry>' names to resource config dicts")
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ConfigurationError(f"nice must be an integer 0..19, got {nice!r}")
        self.client = _client_mode(client)
        self._nice = nice
        self._pd = pd
        self._raptor_cfg = tr.validate_raptor(raptor)
        self._on_pilot_failure = on_pilot_failure
        self._max_restarts = max_pilot_restarts
        self._site_config = {k: dict(v) for k, v in (site_config or {}).items()}
        if work_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            work_dir = Path.cwd() / "asyncflow-work" / f"radical-{stamp}-{os.getpid()}"
        self.work_dir = Path(work_dir).absolute()

        self._rp_exec: concurrent.futures.ThreadPoolExecutor | None = None
        self._rp: Any = None  # the radical.pilot module
        self._session: Any = None
        self._pmgr: Any = None
        self._tmgr: Any = None
        self._pilot: Any = None
        self._pilot_uids: list[str] = []
        self._pilot_ended: dict[str, str] = {}  # pilot uid -> final state
        self._restarts = 0
        self._dead: PilotFailedError | None = None  # set when no pilot will come back
        self._td_keys: frozenset[str] = frozenset()
        self._cores_per_node = 0
        # raptor (function tasks): master task, its workers; started on first use
        self._raptor: Any = None
        self._raptor_uids: set[str] = set()
        self._raptor_broken: BaseException | None = None
        self._raptor_cores = 0  # cores the current master + workers hold for the pilot's life
        # Raptor holds its cores until stopped. An executable that does not fit beside it is
        # held here (entry, description) until no function task is in flight; then raptor is
        # stopped and the executable submitted. Function tasks that arrive while such
        # executables wait are held too (entry only), so a fresh raptor cannot take the cores
        # back first. All of this is touched on the RP thread only.
        self._held_exe: list[tuple[_Entry, Any]] = []
        self._held_fn: list[_Entry] = []
        self._exe_waiting: set[str] = set()  # released executables not yet started
        self._small_pilot_logged = False
        # bookkeeping shared with RP's callback threads; single dict operations are atomic
        self._tasks: dict[str, _Entry] = {}  # rp uid -> entry, unfinished only
        self._by_spec: dict[str, str] = {}  # spec uid -> rp uid of its latest attempt
        self._known_rp_uids: set[str] = set()
        # loop side
        self._pending: list[TaskSpec] = []
        self._flush_handle: asyncio.Handle | None = None
        self._closing = False
        self._active_evt: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._session_uid: str | None = None
        self._pilot_sandbox: str | None = None
        self.timings: dict[str, float] = {}
        self._own_pids: set[int] = set()  # processes RP forked from this one (proxy worker)
        self._proc: ProcessClient | None = None
        if self.client == "process":
            from ._radical_client import ProcessClient

            self._proc = ProcessClient(self, {
                "resources": dict(self._pd), "raptor": dict(self._raptor_cfg) or None,
                "work_dir": str(self.work_dir), "on_pilot_failure": on_pilot_failure,
                "max_pilot_restarts": max_pilot_restarts, "site_config": self._site_config,
                "name": self.name, "nice": nice, "client": "thread"})

    # ================================================================ life cycle
    async def _start(self) -> None:
        if self._proc is not None:
            await self._proc.start()
            return
        self._rp_exec = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="asyncflow-rp")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._rp_exec, self._start_sync)
        except BaseException:
            # half-started RP (a session without pilot, ...) must not outlive the error
            await asyncio.shield(loop.run_in_executor(self._rp_exec, self._close_sync))
            self._rp_exec.shutdown(wait=False)
            self._rp_exec = None  # a later shutdown() has nothing left to do
            raise

    def _start_sync(self) -> None:
        t0 = time.monotonic()
        from ..safe_files import private_dir

        for folder in ("session", "sandbox", "config", "tmp"):
            private_dir(self.work_dir / folder)  # 0700, parents too; refused if others control it
        with _ENV_LOCK:
            self._write_resource_configs(os.environ.get("RADICAL_CONFIG_USER_DIR"))
            with _rp_environment(self.work_dir):
                self._start_rp(t0)
        log.info("RADICAL-Pilot session %s, pilot %s on %s (work dir %s)", self._session_uid,
                 self._pilot.uid, self._pd["resource"], self.work_dir)

    def _start_rp(self, t0: float) -> None:
        import radical.pilot as rp

        self._rp = rp
        self.timings["import"] = time.monotonic() - t0
        self._td_keys = frozenset(rp.TaskDescription._schema)
        try:
            self._session = rp.Session()
        except Exception as exc:
            raise BackendError(f"RADICAL-Pilot session did not start: {exc}") from exc
        self._session_uid = self._session.uid
        self._proxy_worker_pids()
        self.timings["session"] = time.monotonic() - t0
        self._pmgr = rp.PilotManager(session=self._session)
        self._tmgr = rp.TaskManager(session=self._session)
        self._pmgr.register_callback(self._pilot_cb)
        self._tmgr.register_callback(self._task_cb)
        # before the pilot is submitted: the launcher component is the pilot's parent, so a
        # local agent and its tasks inherit the lower priority
        self._lower_priority_of_rp_processes()
        try:
            rcfg = self._session.get_resource_config(self._pd["resource"])
        except Exception as exc:
            raise ConfigurationError(
                f"RADICAL-Pilot knows no resource {self._pd['resource']!r}: {exc}") from exc
        self._cores_per_node = int((rcfg or {}).get("cores_per_node") or 0)
        self._submit_pilot()
        self.timings["pilot_submitted"] = time.monotonic() - t0

    def _write_resource_configs(self, user_dir: str | None) -> None:
        """User resource configs plus ours, in the config dir RP will read."""
        src = user_dir or os.path.expanduser("~")
        user_cfgs = Path(src) / ".radical" / "pilot" / "configs"
        from ..safe_files import private_dir, write_file

        dst = self.work_dir / "config" / ".radical" / "pilot" / "configs"
        private_dir(dst)
        if user_cfgs.is_dir() and user_cfgs.resolve() != dst.resolve():
            for f in user_cfgs.glob("resource_*.json"):
                shutil.copy(f, dst / f.name)
        patches: dict[str, dict[str, Any]] = {}
        for name, entry in self._site_config.items():
            patches[name] = dict(entry)
        res = self._pd["resource"]
        if res.startswith("local.") and res not in self._site_config:
            # The agent must find RP's helper scripts from THIS interpreter. Under pyenv (and
            # some module systems) the login shell's PATH puts shims first; bootstrap_0.sh
            # then sources a shim instead of radical-utils-env.sh and the pilot dies at once.
            pre = [f"export PATH={_shq(os.path.dirname(sys.executable))}:$PATH"]
            if sys.prefix != sys.base_prefix:
                pre.append(f"export VIRTUAL_ENV={_shq(sys.prefix)}")
            patches[res] = {"pre_bootstrap_0": pre}
            if self._pilot_may_exceed_machine():
                # local.localhost fakes 8 cores per node. RP's MPIEXEC method pins ranks with
                # an OpenMPI rankfile to the scheduler's core indices; an index the machine
                # does not have makes mpiexec exit 1 without a word. MPIRUN places ranks by
                # host name only, so MPI tasks run wherever the pilot put them.
                patches[res]["launch_methods"] = {"order": ["FORK", "MPIRUN", "MPIEXEC"]}
        for name, patch in patches.items():
            site, entry = name.split(".", 1)
            path = dst / f"resource_{site}.json"
            data: dict[str, Any] = {}
            if path.exists():
                try:
                    data = json.loads(path.read_text())
                except ValueError:
                    data = {}
            cur = dict(data.get(entry) or {})
            if name not in self._site_config:  # our own patch: the user's entry wins
                patch = dict(patch)
                patch["pre_bootstrap_0"] = (list(cur.get("pre_bootstrap_0") or [])
                                            + patch["pre_bootstrap_0"])
                if "launch_methods" in cur:
                    patch.pop("launch_methods", None)
            cur.update(patch)
            data[entry] = cur
            write_file(path, json.dumps(data, indent=2).encode(), 0o600)

    def _pilot_may_exceed_machine(self) -> bool:
        """True when a local pilot may hand out core indices this machine does not have."""
        cores = self._pd.get("cores")
        if not cores:  # nodes x the config's (fake) cores_per_node: 8 on local.localhost
            return True
        return int(cores) > (os.cpu_count() or 1)

    def _submit_pilot(self) -> None:
        rp = self._rp
        pd = dict(self._pd)
        pd.setdefault("sandbox", str(self.work_dir / "sandbox"))
        pilot = self._pmgr.submit_pilots(rp.PilotDescription(pd))
        self._pilot = pilot
        self._pilot_uids.append(pilot.uid)
        self._tmgr.add_pilots(pilot)
        try:
            self._pilot_sandbox = _url_path(pilot.pilot_sandbox)
        except Exception:
            self._pilot_sandbox = None

    async def wait_active(self, timeout: float | None = None) -> str:
        """Wait until the pilot runs (returns its state); raises PilotFailedError if it ended."""
        if self._proc is not None:
            return await asyncio.wait_for(self._proc.request("wait"), timeout)
        state = await asyncio.wait_for(asyncio.wrap_future(self._active_evt), timeout)
        if state != "PMGR_ACTIVE":
            raise self._dead or PilotFailedError(self._pilot.uid, state, self._pilot_sandbox)
        return state

    async def run_in_client(self, fn: Any, *args: Any) -> Any:
        """``fn(backend, *args)`` where RP's client lives, on a thread of its own; its result.

        For tests, benchmarks and diagnosis that need RP's own objects (``_tmgr``,
        ``_pmgr``, ``_pilot``): in process mode ``fn`` runs in the child process on the
        backend there, so ``fn``, the arguments and the result must pickle (cloudpickle:
        lambdas and functions of ``__main__`` travel by value). Blocking is fine.
        """
        if self._proc is not None:
            return await self._proc.call(fn, args)
        if self._rp_exec is None:
            raise BackendError(f"backend {self.name!r} is not running")
        return await in_thread(fn, self, *args)

    @property
    def client_pid(self) -> int | None:
        """Pid of the RP client process (process mode, once started), else None."""
        proc = self._proc.proc if self._proc is not None else None
        return proc.pid if proc is not None else None

    async def _shutdown(self) -> None:
        if self._proc is not None:
            await self._proc.shutdown()
            return
        self._closing = True
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._pending.clear()
        if self._rp_exec is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._rp_exec, self._close_sync)
        finally:
            self._rp_exec.shutdown(wait=False)
            self._report_leftovers_cancelled()

    def _close_sync(self) -> None:
        """Shutdown order from the facts: tasks -> raptor -> pilots (terminate) -> session."""
        self._closing = True
        t0 = time.monotonic()
        tmgr, pmgr, session = self._tmgr, self._pmgr, self._session
        try:
            left = [u for u in list(self._tasks) if u not in self._raptor_uids]
            if tmgr is not None and left:
                _quiet(tmgr.cancel_tasks, left)
            self._stop_raptor()
            if pmgr is not None:
                # before session.close(): closing the task manager first would also stop the
                # component that cancels pilots, leaving a not-yet-active pilot orphaned
                _quiet(pmgr.close, terminate=True)
            if session is not None:
                _quiet(session.close, download=False)
        finally:
            self.timings["close"] = time.monotonic() - t0
            self._kill_leftovers()
            self._remove_id_counters()

    def _lower_priority_of_rp_processes(self) -> None:
        """Lower the CPU priority (``nice``) of this session's RP processes.

        On a small machine RP's components, a local pilot's agent and its tasks saturate the
        cores; at lower priority the event loop is served first. Only separate processes
        are reniced, never threads of this process: a low-priority thread that holds the
        GIL while the scheduler leaves it waiting would stall the loop instead (priority
        inversion). Raising a nice value needs no privileges.
        """
        if self._nice <= 0 or not sys.platform.startswith("linux") or not self._session_uid:
            return
        import psutil

        procs = leftover_processes(self._session_uid, self.work_dir)
        for pid in self._own_pids:
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        for proc in procs:
            try:
                tids = [t.id for t in proc.threads()]  # Linux: nice is per thread
            except (psutil.Error, OSError):
                continue
            for tid in tids:
                try:
                    prio = os.getpriority(os.PRIO_PROCESS, tid)
                    os.setpriority(os.PRIO_PROCESS, tid, min(19, prio + self._nice))
                except OSError as exc:
                    log.debug("cannot renice %s/%s: %s", proc.pid, tid, exc)

    def _proxy_worker_pids(self) -> None:
        """Remember the pid of the proxy worker RP forks for this session.

        RP's embedded proxy forks one worker per session (``multiprocessing``, no exec): the
        child carries this program's command line and none of RP's folders in its recorded
        environment, so only its pid identifies it if a close leaves it behind.
        """
        try:
            clients = self._session._proxy._clients  # private to RP: best effort
            self._own_pids.update(int(c["proc"].pid) for c in clients.values())
        except Exception:
            pass

    def _remove_id_counters(self) -> None:
        """RP keeps per-session id counters under ~/.radical/utils/<sid>: remove ours."""
        if not self._session_uid:
            return
        try:
            from radical.utils import ids

            base = Path(ids._BASE)
        except Exception:
            return
        folder = base / self._session_uid
        if folder.is_dir() and folder.name.startswith("rp.session."):
            shutil.rmtree(folder, ignore_errors=True)
        # an agent in a batch job gets no TMPDIR from us and makes $TMPDIR/<sid> or /tmp/<sid>
        # on its node; where that node's /tmp is ours too (local and test clusters), remove it
        for tmp in {os.environ.get("TMPDIR") or "/tmp", "/tmp"}:
            folder = Path(tmp) / self._session_uid
            if folder.is_dir() and folder.name.startswith("rp.session."):
                shutil.rmtree(folder, ignore_errors=True)

    def _stop_raptor(self) -> None:
        master = self._raptor
        self._raptor = None
        if master is None or self._tmgr is None:
            return
        if master.state not in self._rp.FINAL and master.pilot:
            # rpc() waits for an answer that a dead master never sends: bound it
            t = threading.Thread(target=_quiet, args=(master.rpc, "stop"), daemon=True)
            t.start()
            t.join(10)
        uids = [u for u in self._raptor_uids]
        _quiet(self._tmgr.cancel_tasks, uids)

    def _kill_leftovers(self) -> None:
        """Last resort: processes of THIS session that outlived close (found by session id)."""
        if not self._session_uid:
            return
        import psutil

        procs = leftover_processes(self._session_uid, self.work_dir)
        for pid in self._own_pids:
            try:
                proc = psutil.Process(pid)
                if proc.ppid() == os.getpid() and proc.status() != psutil.STATUS_ZOMBIE \
                        and all(p.pid != pid for p in procs):
                    procs.append(proc)
            except psutil.Error:
                pass
        if not procs:
            return
        log.warning("RADICAL-Pilot left %d process(es) of session %s; terminating pids %s",
                    len(procs), self._session_uid, [p.pid for p in procs])
        end_processes(procs)

    def _report_leftovers_cancelled(self) -> None:
        # the engine normally cancelled these already; a standalone user still hears back
        for uid in list(self._tasks):
            entry = self._tasks.pop(uid, None)
            if entry is not None and uid not in self._raptor_uids:
                entry.reporter.threadsafe(entry.spec.uid, _CANCELLED)

    # ================================================================ submit / cancel
    def bind(self, reporter: Reporter) -> None:
        if self._proc is not None:
            super().bind(reporter)
            self._proc.bind(reporter)
            return
        # one backend may serve several engines in turn (each with its own loop): a flush
        # scheduled on a previous loop would never run, so hand its batch over now
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
            if self._pending and self._rp_exec is not None and self._reporter is not None:
                batch, self._pending = self._pending, []
                self._rp_exec.submit(self._submit_sync, batch, self._reporter)
        super().bind(reporter)

    def submit(self, specs: Sequence[TaskSpec]) -> None:
        if self._proc is not None:
            self._proc.submit(specs)
            return
        reporter = self.reporter
        if self._closed or self._closing or self._rp_exec is None:
            err = BackendError(f"backend {self.name!r} is not running (started: "
                               f"{self._started}, shut down: {self._closed or self._closing})")
            for spec in specs:
                reporter.failed(spec.uid, err)
            return
        self._pending.extend(specs)
        if self._flush_handle is None:
            self._flush_handle = reporter.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        batch, self._pending = self._pending, []
        if batch and self._rp_exec is not None and not self._closing:
            self._rp_exec.submit(self._submit_sync, batch, self.reporter)

    def cancel(self, uid: str) -> None:
        if self._proc is not None:
            self._proc.cancel(uid)
            return
        for i, spec in enumerate(self._pending):
            if spec.uid == uid:
                del self._pending[i]
                return
        if self._rp_exec is not None and not self._closing:
            self._rp_exec.submit(self._cancel_sync, uid)

    def _cancel_sync(self, spec_uid: str) -> None:
        rp_uid = self._by_spec.get(spec_uid)
        entry = self._tasks.get(rp_uid) if rp_uid else None
        if entry is None or entry.spec.uid != spec_uid:
            return
        entry.cancel_requested = True
        self._tasks.pop(rp_uid, None)  # the engine settled it; ignore RP's late reports
        _quiet(self._tmgr.cancel_tasks, [rp_uid])
        if self._held_exe or self._held_fn or self._exe_waiting:
            self._rebalance()

    def _submit_sync(self, batch: list[TaskSpec], reporter: Reporter) -> None:
        """Runs on the RP thread: translate and submit a batch with one submit_tasks."""
        if self._closing:
            return
        if self._dead is not None:
            for spec in batch:
                reporter.threadsafe(spec.uid, _FAILED, error=self._dead)
            return
        tds: list[Any] = []
        entries: list[_Entry] = []
        pilot_uid = self._pilot.uid
        pause_at = time.perf_counter() + _GIL_SLICE
        for spec in batch:
            if time.perf_counter() > pause_at:
                # a big batch is tens of ms of pure Python: hand the GIL to the event loop
                # now and then instead of making it wait for the interpreter's 5 ms switch
                # (which another RP thread may win)
                time.sleep(0)
                pause_at = time.perf_counter() + _GIL_SLICE
            if spec.kind is _FUNCTION and (self._held_exe or self._exe_waiting):
                # executables wait for raptor's cores: do not start a new raptor before them
                entry = self._register(spec, pilot_uid, reporter, None)
                self._held_fn.append(entry)
                continue
            try:
                td, raptor = self._translate(spec)
                held = watch = False
                if spec.kind is _EXECUTABLE:
                    held, watch = self._exe_fit(spec, td)
            except Exception as exc:  # bad key, unpicklable function, raptor trouble, ...
                reporter.threadsafe(spec.uid, _FAILED, error=exc)
                continue
            entry = self._register(spec, pilot_uid, reporter, raptor)
            td.uid = entry.rp_uid
            if held:
                self._held_exe.append((entry, td))
                continue
            if watch:  # a raptor started now could take its cores before it gets them
                self._exe_waiting.add(entry.rp_uid)
            tds.append(td)
            entries.append(entry)
        if tds:
            self._submit_tds(tds, entries)
        if self._held_exe or self._held_fn:
            self._rebalance()

    def _register(self, spec: TaskSpec, pilot_uid: str, reporter: Reporter,
                  raptor: str | None) -> _Entry:
        rp_uid = tr.rp_uid_for(spec.uid, self._known_rp_uids)
        self._known_rp_uids.add(rp_uid)
        entry = _Entry(spec, rp_uid, pilot_uid, reporter, raptor)
        # registered BEFORE submit: RP's first callbacks can beat submit_tasks' return
        self._tasks[rp_uid] = entry
        self._by_spec[spec.uid] = rp_uid
        return entry

    def _submit_tds(self, tds: list[Any], entries: list[_Entry]) -> None:
        try:
            self._tmgr.submit_tasks(tds)
        except Exception as exc:
            err = BackendError(f"RADICAL-Pilot refused {len(tds)} task(s): {exc}")
            err.__cause__ = exc
            for entry in entries:
                if self._tasks.pop(entry.rp_uid, None) is not None:
                    entry.reporter.threadsafe(entry.spec.uid, _FAILED, error=err)

    def _translate(self, spec: TaskSpec) -> tuple[Any, str | None]:
        """RP task description and raptor master uid (function tasks) for ``spec``."""
        rp = self._rp
        fields = tr.task_description(spec, self._td_keys)
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
            raptor = self._ensure_raptor()
            fields.update(mode=rp.TASK_FUNCTION, raptor_id=raptor,
                          function=rp.PythonTask(tr.REMOTE_CALL, (self._pack_call(spec),), {}))
        else:
            raise ConfigurationError(f"task {spec.name!r}: the radical backend runs function "
                                     f"and executable tasks, not {spec.kind.value!r}")
        try:
            return rp.TaskDescription(fields), raptor
        except Exception as exc:  # RP's own type checks (typeguard)
            raise ConfigurationError(
                f"task_description of task {spec.name!r} rejected by RADICAL-Pilot: {exc}") from exc

    def _pack_call(self, spec: TaskSpec) -> str:
        """A function task's call, pickled for the raptor worker (the client process
        overrides this: the parent pickles it, where the user's objects live)."""
        return tr.pack_call(spec)

    def _unpack_result(self, value: Any) -> tuple[bool, Any]:
        """(ok, value or exception) of a raptor result (the client process passes it on)."""
        return tr.unpack_result(value)

    # ================================================================ raptor
    def _exe_fit(self, spec: TaskSpec, td: Any) -> tuple[bool, bool]:
        """(hold, watch) for executable ``td`` (RP thread).

        hold: it cannot run beside the running raptor, which must stop first. watch: no
        raptor runs, but it would not fit beside one: function tasks wait until it started.
        Raises ConfigurationError when it needs more cores than the whole pilot has: RP
        fails such a task only while nothing else runs, otherwise it waits forever.
        """
        need = _cores_of(td)
        total = self._total_cores()
        if total is not None and need > total:
            raise ConfigurationError(
                f"task {spec.name!r} needs {need} core(s) ({_ranks_text(td)}) but pilot "
                f"{self._pilot.uid} has {total} core(s) in total: it can never run; "
                "ask for a larger pilot (cores= / nodes=) or fewer ranks/cores")
        if total is None:
            total = self._pilot_cores()
        if self._raptor is None:
            return False, need > total - self._planned_raptor_cores()
        return need > total - self._raptor_cores, False

    def _raptor_sizes(self, env: Mapping[str, str] | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any], int]:
        """Master and worker description fields and the worker count from the config."""
        cfg = self._raptor_cfg
        cores = cfg.get("cores_per_worker") or max(1, (self._pilot_cores() - 1) // 2)
        master = {"mode": self._rp.RAPTOR_MASTER, **dict(cfg.get("master") or {})}
        worker = {"mode": self._rp.RAPTOR_WORKER, "ranks": 1, "cores_per_rank": int(cores),
                  "gpus_per_rank": float(cfg.get("gpus_per_worker") or 0),
                  "environment": dict(env or {}), **dict(cfg.get("worker") or {})}
        return master, worker, int(cfg.get("workers") or 1)

    def _planned_raptor_cores(self) -> int:
        master, worker, workers = self._raptor_sizes()
        return _cores_of(master) + workers * _cores_of(worker)

    def _fn_in_flight(self, master_uid: str) -> bool:
        return any(e.raptor == master_uid for e in list(self._tasks.values()))

    def _rebalance(self) -> None:
        """Stop raptor for executables that wait for its cores; release what may go (RP thread).

        Held executables go once no function task runs on the current raptor (raptor is
        stopped first); held function tasks go once no released executable still waits to
        start, so a fresh raptor only queues behind running executables, never ahead.
        """
        if self._closing or self._dead is not None:
            return
        tasks = self._tasks
        self._held_exe = [(e, td) for e, td in self._held_exe if tasks.get(e.rp_uid) is e]
        if self._held_exe:
            if self._raptor is not None:
                if self._fn_in_flight(self._raptor.uid):
                    return  # the last function task's end calls us again
                self._retire_raptor()
            batch, self._held_exe = self._held_exe, []
            self._exe_waiting.update(e.rp_uid for e, _ in batch)
            log.info("submitting %d executable task(s) that needed raptor's cores",
                     len(batch))
            self._submit_tds([td for _, td in batch], [e for e, _ in batch])
        self._exe_waiting = {u for u in self._exe_waiting
                             if (e := tasks.get(u)) is not None and not e.started}
        if self._exe_waiting or not self._held_fn:
            return
        held, self._held_fn = self._held_fn, []
        tds, entries = [], []
        for entry in held:
            if tasks.get(entry.rp_uid) is not entry:
                continue  # cancelled or failed with its pilot meanwhile
            try:
                td, raptor = self._translate(entry.spec)
            except Exception as exc:
                if tasks.pop(entry.rp_uid, None) is not None:
                    entry.reporter.threadsafe(entry.spec.uid, _FAILED, error=exc)
                continue
            td.uid = entry.rp_uid
            entry.raptor = raptor
            tds.append(td)
            entries.append(entry)
        if tds:
            self._submit_tds(tds, entries)

    def _retire_raptor(self) -> None:
        """Stop the idle raptor so waiting executables get its cores (RP thread).

        Its uids leave ``_raptor_uids`` first, so their final states are not taken for a
        failure (``_raptor_ended``); ``_raptor = None`` makes the next function task start
        a fresh master instead of being sent to this dying one.
        """
        master = self._raptor
        self._raptor = None
        uids = list(self._raptor_uids)
        self._raptor_uids.clear()
        log.info("stopping raptor %s: executable tasks need its %d core(s)", master.uid,
                 self._raptor_cores)
        self._raptor_cores = 0
        if uids:  # never an empty list: cancel_tasks([]) cancels EVERY task
            _quiet(self._tmgr.cancel_tasks, uids)

    def _kick(self) -> None:
        """From a callback thread: let the RP thread re-check held tasks."""
        ex = self._rp_exec
        if ex is None or self._closing:
            return
        try:
            ex.submit(self._rebalance)
        except RuntimeError:  # executor already shut down
            pass

    def _total_cores(self) -> int | None:
        """Cores of the current pilot, or None when not known (yet).

        The agent's own count once the pilot is active (RP rounds a pilot up to whole nodes:
        ``cores=2`` on local.localhost gets its fake 8-core node), before that the request.
        """
        try:
            rm = self._pilot.resource_details or {}
            nodes, cpn = len(rm.get("node_list") or ()), int(rm.get("cores_per_node") or 0)
            if nodes and cpn:
                return nodes * cpn
        except Exception:
            pass
        if self._pd.get("cores"):
            return int(self._pd["cores"])
        if self._cores_per_node:
            return int(self._pd.get("nodes") or 1) * self._cores_per_node
        return None

    def _ensure_raptor(self) -> str:
        """Uid of a raptor master on the current pilot; started on first use (RP thread)."""
        if self._raptor is not None:
            return self._raptor.uid
        if self._raptor_broken is not None:
            raise self._raptor_broken
        rp = self._rp
        cfg = self._raptor_cfg
        env = {}
        if cfg.get("pythonpath", True):
            # function tasks are pickled by reference when their module is importable here;
            # the worker imports them from the same places (same host or shared filesystem)
            env["PYTHONPATH"] = os.pathsep.join(_import_path())
        env.update({str(k): str(v) for k, v in (cfg.get("environment") or {}).items()})
        master_td, wtd, n_workers = self._raptor_sizes(env)
        try:
            master = self._pilot.submit_raptors(rp.TaskDescription(master_td))[0]
            workers = master.submit_workers(
                [rp.TaskDescription(dict(wtd)) for _ in range(n_workers)])
        except Exception as exc:
            raise BackendError(f"could not start the raptor master/worker: {exc}") from exc
        self._raptor = master
        self._raptor_uids.update([master.uid, *(w.uid for w in workers)])
        self._raptor_cores = _cores_of(master_td) + len(workers) * _cores_of(wtd)
        log.info("raptor %s started with %d worker(s) of %d core(s)", master.uid,
                 len(workers), _cores_of(wtd))
        total = self._total_cores() or self._pilot_cores()
        if self._raptor_cores >= total and not self._small_pilot_logged:
            self._small_pilot_logged = True
            log.info("raptor master and workers take all %d core(s) of the pilot: function "
                     "tasks and executable tasks alternate (raptor is stopped for executables "
                     "and started again for the next function task)", total)
        return master.uid

    def _pilot_cores(self) -> int:
        if self._pd.get("cores"):
            return int(self._pd["cores"])
        return int(self._pd.get("nodes") or 1) * (self._cores_per_node or 1)

    def _raptor_ended(self, uid: str, state: str, task: Any) -> None:
        """A raptor master or worker ended while we still need it (callback thread).

        Only the current raptor counts: one stopped on purpose (``_retire_raptor``) left
        ``_raptor_uids`` before its tasks were cancelled.
        """
        master = self._raptor  # read first: a newer master never owns an older uid
        if self._closing or master is None or uid not in self._raptor_uids:
            return
        err = BackendError(
            f"raptor task {uid} ended in state {state} ({getattr(task, 'exception', None)}); "
            f"function tasks cannot run (logs: {self._pilot_sandbox})")
        self._raptor = None  # the next function task starts a fresh one
        uids = list(self._raptor_uids)
        self._raptor_uids.clear()  # the rest of this raptor ending is no news
        self._raptor_cores = 0
        for rp_uid, entry in list(self._tasks.items()):
            if entry.raptor == master.uid and self._tasks.pop(rp_uid, None) is not None:
                entry.reporter.threadsafe(entry.spec.uid, _FAILED, error=err)
        if self._rp_exec is not None and uids:
            try:  # never an empty list: cancel_tasks([]) cancels EVERY task
                self._rp_exec.submit(_quiet, self._tmgr.cancel_tasks, uids)
            except RuntimeError:
                pass
            self._kick()

    # ================================================================ callbacks (RP threads)
    def _task_cb(self, task: Any, state: str) -> None:
        uid = task.uid
        entry = self._tasks.get(uid)
        if entry is None:
            if state in _PILOT_FINAL and uid in self._raptor_uids:
                self._raptor_ended(uid, state, task)
            return
        if state == "AGENT_EXECUTING":
            entry.reporter.threadsafe(entry.spec.uid, _RUNNING)
            entry.started = True
            if uid in self._exe_waiting:  # it has its cores: held function tasks may go
                self._kick()
            return
        if state not in _PILOT_FINAL:
            return
        if self._tasks.pop(uid, None) is None:  # someone else (cancel, pilot watch) won
            return
        if (self._held_exe and entry.raptor is not None) or uid in self._exe_waiting:
            self._kick()
        spec = entry.spec
        rep = entry.reporter
        try:
            # RP sends a task's slots only with its final state, so the node is known now
            node = _node_of(task) if spec.kind is _EXECUTABLE else None
            if state == "DONE":
                if spec.kind is _FUNCTION:
                    ok, value = self._unpack_result(task.return_value)
                    if ok:
                        rep.threadsafe(spec.uid, _DONE, value)
                    else:
                        rep.threadsafe(spec.uid, _FAILED, error=value)
                elif lost := launcher_node_failure(task.stderr):
                    sandbox = _url_path(task.sandbox) if task.sandbox else None
                    rep.threadsafe(spec.uid, _FAILED, error=TaskExecutionError(
                        spec.command_line, task.exit_code, task.stderr or "", task=spec.name,
                        details=f"srun lost node {lost} and exited 0, so RADICAL-Pilot reported "
                                f"DONE; the output is incomplete; sandbox: {sandbox}",
                        **_stdio_paths(spec)), node=node)
                elif (missing := tr.missing_output_error(spec)) is not None:
                    rep.threadsafe(spec.uid, _FAILED, error=missing, node=node)
                elif spec.stdio is not None:  # capture_stdio: the result is the file's path
                    rep.threadsafe(spec.uid, _DONE, spec.stdio[0], node=node)
                else:
                    rep.threadsafe(spec.uid, _DONE, _full_stdout(task), node=node)
            elif state == "FAILED":
                rep.threadsafe(spec.uid, _FAILED, error=self._failure(spec, task), node=node)
            elif spec.timeout and not entry.cancel_requested:  # RP's timeout cancels tasks
                rep.threadsafe(spec.uid, _FAILED, error=TaskTimeoutError(
                    f"task {spec.name!r} exceeded its timeout of {spec.timeout} s "
                    "(RADICAL-Pilot cancelled it)"))
            else:
                rep.threadsafe(spec.uid, _CANCELLED)
        except Exception as exc:  # never let a bad result kill RP's listener thread
            log.exception("reporting %s failed", uid)
            rep.threadsafe(spec.uid, _FAILED, error=exc)

    def _failure(self, spec: TaskSpec, task: Any) -> BaseException:
        exc_text = str(task.exception or "")
        sandbox = _url_path(task.sandbox) if task.sandbox else None
        stderr = task.stderr or ""
        if spec.kind is _FUNCTION:
            if "TimeoutError" in exc_text and spec.timeout:
                return TaskTimeoutError(f"task {spec.name!r} exceeded its timeout of "
                                        f"{spec.timeout} s")
            detail = (task.exception_detail or "").strip().splitlines()[-8:]
            return TaskExecutionError(
                spec.name, task.exit_code, stderr, task=spec.name,
                details=f"RP exception: {exc_text or 'none'}; sandbox: {sandbox}"
                        + ("; " + " | ".join(detail) if detail else ""))
        code = task.exit_code
        if code == 127 and ("not found" in stderr or "No such file" in stderr):
            argv0 = spec.command if isinstance(spec.command, str) else (spec.command or [""])[0]
            return ExecutableNotFoundError(str(argv0), spec.command_line)
        if code is None and "pilot" in exc_text.lower() and self._pilot_ended:
            puid, pstate = next(iter(self._pilot_ended.items()))
            return PilotFailedError(puid, pstate, self._pilot_sandbox, exc_text)
        return TaskExecutionError(
            spec.command_line, code, stderr, task=spec.name,
            details=f"RP exception: {exc_text or 'none'}; sandbox: {sandbox}",
            **_stdio_paths(spec))

    def _pilot_cb(self, pilot: Any, state: str) -> None:
        if state == "PMGR_ACTIVE" and not self._active_evt.done():
            self._active_evt.set_result(state)
            return
        if state not in _PILOT_FINAL or pilot.uid in self._pilot_ended:
            return  # RP reports final pilot states twice
        self._pilot_ended[pilot.uid] = state
        if self._closing:
            return
        sandbox = _url_path(pilot.pilot_sandbox) if pilot.pilot_sandbox else self._pilot_sandbox
        log.warning("pilot %s ended in state %s (logs: %s)", pilot.uid, state, sandbox)
        if self._pilot is not None and pilot.uid != self._pilot.uid:
            return  # an old pilot, already replaced
        if self._on_pilot_failure == "resubmit" and self._restarts < self._max_restarts \
                and self._rp_exec is not None:
            self._restarts += 1
            self._rp_exec.submit(self._replace_pilot, pilot.uid, state)
            return
        err = PilotFailedError(pilot.uid, state, sandbox,
                               _pilot_detail(state, self._restarts, self._max_restarts,
                                             self._on_pilot_failure))
        self._dead = err
        if not self._active_evt.done():
            self._active_evt.set_result(state)
        failed = []
        for rp_uid, entry in list(self._tasks.items()):
            if entry.pilot == pilot.uid and self._tasks.pop(rp_uid, None) is not None:
                if rp_uid not in self._raptor_uids:
                    entry.reporter.threadsafe(entry.spec.uid, _FAILED, error=err)
                    failed.append(rp_uid)
        if failed and self._rp_exec is not None:  # so RP stops tracking them, best effort
            self._rp_exec.submit(_quiet, self._tmgr.cancel_tasks, failed)

    def _replace_pilot(self, old_uid: str, state: str) -> None:
        """RP thread: a new pilot for the unfinished tasks of a pilot that ended."""
        if self._closing:
            return
        log.warning("pilot %s ended (%s): starting replacement %d of %d", old_uid, state,
                    self._restarts, self._max_restarts)
        self._raptor = None
        self._raptor_uids.clear()
        self._raptor_cores = 0
        self._held_exe, self._held_fn = [], []  # their entries are resubmitted below
        self._exe_waiting.clear()
        _quiet(self._tmgr.remove_pilots, old_uid)
        self._active_evt = concurrent.futures.Future()
        try:
            with _ENV_LOCK, _rp_environment(self.work_dir):
                self._submit_pilot()
        except Exception as exc:
            err = PilotFailedError(old_uid, state, self._pilot_sandbox,
                                   f"replacement pilot could not be submitted: {exc}")
            self._dead = err
            for rp_uid, entry in list(self._tasks.items()):
                if self._tasks.pop(rp_uid, None) is not None:
                    entry.reporter.threadsafe(entry.spec.uid, _FAILED, error=err)
            return
        moved: dict[Reporter, list[TaskSpec]] = {}
        stale = []
        for rp_uid, entry in list(self._tasks.items()):
            if entry.pilot == old_uid and self._tasks.pop(rp_uid, None) is not None:
                stale.append(rp_uid)
                moved.setdefault(entry.reporter, []).append(entry.spec)
        _quiet(self._tmgr.cancel_tasks, stale)
        for reporter, specs in moved.items():
            self._submit_sync(specs, reporter)

    # ================================================================ introspection
    @property
    def pilot_uid(self) -> str | None:
        """The current pilot's uid (a replacement pilot's after a restart)."""
        if self._proc is not None:
            return self.describe().get("pilot_uid")
        return self._pilot.uid if self._pilot is not None else None

    @property
    def session_uid(self) -> str | None:
        if self._proc is not None:
            return self._proc.info.get("session")
        return self._session_uid

    def describe(self) -> dict[str, Any]:
        if self._proc is not None:
            if not self._proc.info:  # not started: what the constructor knows
                return {"name": self.name, "type": type(self).__name__, "client": "process",
                        "resource": self._pd["resource"], "work_dir": str(self.work_dir)}
            info = self._proc.describe()
            info.update(name=self.name, type=type(self).__name__, client="process",
                        client_pid=self.client_pid)
            return info
        pilot = self._pilot
        return {
            "name": self.name,
            "type": type(self).__name__,
            "client": self.client,
            "resource": self._pd["resource"],
            "pilot": {k: v for k, v in self._pd.items() if k != "exit_on_error"},
            "pilot_uid": pilot.uid if pilot is not None else None,
            "pilot_state": self._pilot_state(),
            "pilot_sandbox": self._pilot_sandbox,
            "session": self._session_uid,
            "work_dir": str(self.work_dir),
            "raptor": dict(self._raptor_cfg) or "auto",
            "raptor_master": self._raptor.uid if self._raptor is not None else None,
            "on_pilot_failure": self._on_pilot_failure,
            "pilot_restarts": self._restarts,
            "unfinished_tasks": len(self._tasks),
            "timings": dict(self.timings),
        }

    def _pilot_state(self) -> str | None:
        if self._pilot is None:
            return None
        return self._pilot_ended.get(self._pilot.uid) or str(self._pilot.state)


# ==================================================================== helpers

def _client_mode(client: str | None) -> str:
    """``client=``, else $ASYNCFLOW_HPC_RP_CLIENT, else the default; checked."""
    where = "client="
    if client is None:
        client = os.environ.get(ENV_CLIENT, "").strip() or DEFAULT_CLIENT
        where = f"${ENV_CLIENT}"
    if not isinstance(client, str) or client.strip().lower() not in CLIENT_MODES:
        raise ConfigurationError(
            f"{where} must be 'process' (RP's client in a child process) or 'thread' (in this "
            f"process), got {client!r}")
    return client.strip().lower()


class _rp_environment:
    """RP's environment for the duration of start-up, restored afterwards.

    Settings only matter while RP spawns its processes (they inherit the environment), so
    nothing leaks into the rest of the user's program.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.saved: dict[str, str | None] = {}
        self.saved_tempdir: str | None = None

    def __enter__(self) -> None:
        w = self.work_dir
        env = os.environ
        values = {
            "RADICAL_PILOT_BASE": str(w / "session"),
            "RADICAL_PILOT_SESSION_BASE": str(w / "session"),
            "RADICAL_CONFIG_USER_DIR": str(w / "config"),
            "RADICAL_BASE": str(w),
            "TMPDIR": str(w / "tmp"),
        }
        # SLURM requeues a batch job whose node failed (JobRequeue=1): RP would then see no
        # failure and wait until the walltime. Pilot jobs are submitted without requeue.
        if "SBATCH_NO_REQUEUE" not in env and "SBATCH_REQUEUE" not in env:
            values["SBATCH_NO_REQUEUE"] = "1"
        # a user's explicit choice wins for these two (see docs/radical-pilot.md)
        for key, default in (("RADICAL_PROFILE", "FALSE"), ("RADICAL_DEFAULT_IFACE", "lo")):
            if key not in env:
                values[key] = default
        for key, value in values.items():
            self.saved[key] = env.get(key)
            env[key] = value
        self.saved_tempdir = tempfile.tempdir

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        tempfile.tempdir = self.saved_tempdir


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        log.debug("%s failed: %s", getattr(fn, "__name__", fn), exc)
        return None


def _shq(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _url_path(url: Any) -> str:
    """The local path of an RP sandbox URL (``file://localhost/a/b/`` -> ``/a/b/``)."""
    path = getattr(url, "path", None)
    if path:
        return str(path)
    text = str(url)
    if "://" in text:
        text = "/" + text.split("://", 1)[1].split("/", 1)[-1]
    return text


def _cores_of(td: Any) -> int:
    """Cores a task description asks for: ranks x cores_per_rank (RP's defaults are 1)."""
    try:
        return max(1, int(td.get("ranks") or 1)) * max(1, int(td.get("cores_per_rank") or 1))
    except (TypeError, ValueError, AttributeError):
        return 1


def _ranks_text(td: Any) -> str:
    return f"ranks={td.get('ranks') or 1} x cores_per_rank={td.get('cores_per_rank') or 1}"


def _node_of(task: Any) -> str | None:
    try:
        slots = task.slots
        if slots:
            return slots[0].get("node_name") or None
    except Exception:
        pass
    return None


def _stdio_paths(spec: TaskSpec) -> dict[str, str]:
    """``stdout_path`` / ``stderr_path`` of a TaskExecutionError (capture_stdio=True)."""
    if spec.stdio is None:
        return {}
    return {"stdout_path": spec.stdio[0], "stderr_path": spec.stdio[1]}


def _full_stdout(task: Any) -> str:
    """task.stdout, or the whole stdout file when RP kept only its last KiB."""
    out = task.stdout or ""
    if out.startswith(_SHORTENED):
        try:
            name = task.description.get("stdout") or f"{task.uid}.out"
            path = os.path.join(_url_path(task.sandbox), name)
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            pass
    return out


def _pilot_detail(state: str, restarts: int, limit: int, mode: str) -> str:
    # RP reports DONE both when the runtime expired and when the pilot was cancelled through
    # RP (the agent then exits cleanly); CANCELED when its job was cancelled before running
    what = {"DONE": "its agent exited (runtime expired or pilot cancelled)",
            "CANCELED": "it was cancelled", "FAILED": "it failed (agent or job died)"
            }.get(state, state)
    text = f"{what} while tasks were unfinished"
    if mode == "resubmit":
        text += f"; {restarts} of {limit} replacement pilot(s) used"
    return text


def _import_path() -> list[str]:
    seen: list[str] = []
    for entry in [os.getcwd(), *sys.path]:
        path = os.path.abspath(entry or os.getcwd())
        if os.path.isdir(path) and path not in seen:
            seen.append(path)
    return seen


def end_processes(procs: list[Any], grace: float = 3.0) -> None:
    """SIGTERM these psutil processes, then SIGKILL whatever is left after ``grace`` s."""
    import psutil

    for p in procs:
        _quiet(p.terminate)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        _quiet(p.kill)


def leftover_processes(session_uid: str, work_dir: str | os.PathLike | None = None) -> list[Any]:
    """Live processes that belong to RP session ``session_uid`` (for checks and clean-up).

    RP daemonises its components and PSI/J detaches the pilot, so they are NOT children of
    this process: a walk of our children misses them. Every process started while the
    backend started inherits its environment, whose RP folders point into the backend's own
    ``work_dir``; that, the session id in the command line, or a working directory inside
    the session's sandbox (whose path holds the session id) identifies them, never a
    program name. This process and its ancestors never count (the campaign's own command
    line may name the work dir), nor does a process that merely names the work dir.
    """
    import psutil

    marks = [session_uid] + ([str(work_dir)] if work_dir else [])
    keys = ("TMPDIR", "RADICAL_PILOT_BASE", "RADICAL_CONFIG_USER_DIR", "RADICAL_BASE",
            "RP_SESSION_ID", "RP_PILOT_SANDBOX")
    me = os.getpid()
    try:
        spared = {me, *(p.pid for p in psutil.Process(me).parents())}
    except psutil.Error:
        spared = {me}
    uid = os.getuid()
    out = []
    for proc in psutil.process_iter(["pid", "uids", "status"]):
        try:
            if proc.pid in spared or proc.info["uids"].real != uid \
                    or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            text = " ".join(proc.cmdline())
            if session_uid not in text:
                env = proc.environ()
                text = " ".join(env.get(k, "") for k in keys)
                if not any(m in text for m in marks):
                    # the agent's components are forked (no exec): their recorded environment
                    # is the agent's, their title is rp.<component>; they work in the sandbox
                    try:
                        text = proc.cwd()
                    except (psutil.Error, OSError):
                        continue
                    if session_uid not in text:
                        continue
            out.append(proc)
        except (psutil.Error, OSError):
            continue
    return out
