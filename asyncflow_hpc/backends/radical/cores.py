"""Raptor and executable tasks sharing a pilot's cores.

Function tasks run in raptor (a master and its workers), which holds its cores until it is
stopped. An executable that does not fit beside it is held until no function task is in
flight; then raptor is stopped and the executable submitted. Function tasks that arrive
while such executables wait are held too, so a fresh raptor cannot take the cores back
first. Everything here runs on the client's RP thread, except :meth:`Cores.started`,
:meth:`Cores.finished` and :meth:`Cores.raptor_ended` (RP's callback threads), which only
read and hand work to the RP thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ...errors import BackendError, ConfigurationError
from ...tasks import TaskSpec, TaskState
from .cleanup import quiet
from .environment import import_path

if TYPE_CHECKING:
    from .inprocess import Entry, InProcessClient

__all__ = ["Cores"]

log = logging.getLogger("asyncflow_hpc.backends.radical")


def cores_of(td: Any) -> int:
    """Cores a task description asks for: ranks x cores_per_rank (RP's defaults are 1)."""
    try:
        return max(1, int(td.get("ranks") or 1)) * max(1, int(td.get("cores_per_rank") or 1))
    except (TypeError, ValueError, AttributeError):
        return 1


def _ranks_text(td: Any) -> str:
    return f"ranks={td.get('ranks') or 1} x cores_per_rank={td.get('cores_per_rank') or 1}"


class Cores:
    """The raptor of the current pilot and the tasks waiting for its cores."""

    def __init__(self, client: InProcessClient) -> None:
        self.client = client
        self.cfg = client.opts.raptor
        self.master: Any = None  # raptor master task; started on first use
        self.uids: set[str] = set()  # master and workers of the current raptor
        self.held_cores = 0  # cores the current master + workers hold for the pilot's life
        self.held_exe: list[tuple[Entry, Any]] = []  # (entry, description) waiting for raptor
        self.held_fn: list[Entry] = []  # function tasks waiting for held executables
        self.exe_waiting: set[str] = set()  # released executables not yet started
        self._small_pilot_logged = False

    @property
    def master_uid(self) -> str | None:
        return self.master.uid if self.master is not None else None

    def forget(self) -> None:
        """The pilot was replaced: its raptor is gone, held tasks are resubmitted."""
        self.master = None
        self.uids.clear()
        self.held_cores = 0
        self.held_exe, self.held_fn = [], []
        self.exe_waiting.clear()

    # -- decisions for a batch (RP thread) --------------------------------------------
    def holds_functions(self) -> bool:
        """Executables wait for raptor's cores: a new raptor must not start before them."""
        return bool(self.held_exe or self.exe_waiting)

    def exe_fit(self, spec: TaskSpec, td: Any) -> tuple[bool, bool]:
        """(hold, watch) for executable ``td``.

        hold: it cannot run beside the running raptor, which must stop first. watch: no
        raptor runs, but it would not fit beside one: function tasks wait until it started.
        Raises ConfigurationError when it needs more cores than the whole pilot has: RP
        fails such a task only while nothing else runs, otherwise it waits forever.
        """
        need = cores_of(td)
        total = self.total_cores()
        if total is not None and need > total:
            raise ConfigurationError(
                f"task {spec.name!r} needs {need} core(s) ({_ranks_text(td)}) but pilot "
                f"{self.client.pilot_uid} has {total} core(s) in total: it can never run; "
                "ask for a larger pilot (cores= / nodes=) or fewer ranks/cores")
        if total is None:
            total = self._pilot_cores()
        if self.master is None:
            return False, need > total - self._planned_cores()
        return need > total - self.held_cores, False

    def total_cores(self) -> int | None:
        """Cores of the current pilot, or None when not known (yet).

        The agent's own count once the pilot is active (RP rounds a pilot up to whole nodes:
        ``cores=2`` on local.localhost gets its fake 8-core node), before that the request.
        """
        pd = self.client.opts.pilot
        try:
            rm = self.client.pilot.resource_details or {}
            nodes, cpn = len(rm.get("node_list") or ()), int(rm.get("cores_per_node") or 0)
            if nodes and cpn:
                return nodes * cpn
        except Exception:
            pass
        if pd.get("cores"):
            return int(pd["cores"])
        if self.client.cores_per_node:
            return int(pd.get("nodes") or 1) * self.client.cores_per_node
        return None

    def _pilot_cores(self) -> int:
        pd = self.client.opts.pilot
        if pd.get("cores"):
            return int(pd["cores"])
        return int(pd.get("nodes") or 1) * (self.client.cores_per_node or 1)

    def _sizes(self, env: Mapping[str, str] | None = None
               ) -> tuple[dict[str, Any], dict[str, Any], int]:
        """Master and worker description fields and the worker count from the config."""
        cfg, rp = self.cfg, self.client.rp
        cores = cfg.get("cores_per_worker") or max(1, (self._pilot_cores() - 1) // 2)
        master = {"mode": rp.RAPTOR_MASTER, **dict(cfg.get("master") or {})}
        worker = {"mode": rp.RAPTOR_WORKER, "ranks": 1, "cores_per_rank": int(cores),
                  "gpus_per_rank": float(cfg.get("gpus_per_worker") or 0),
                  "environment": dict(env or {}), **dict(cfg.get("worker") or {})}
        return master, worker, int(cfg.get("workers") or 1)

    def _planned_cores(self) -> int:
        master, worker, workers = self._sizes()
        return cores_of(master) + workers * cores_of(worker)

    # -- raptor's life (RP thread) ----------------------------------------------------
    def ensure_raptor(self) -> str:
        """Uid of a raptor master on the current pilot; started on first use."""
        if self.master is not None:
            return self.master.uid
        rp = self.client.rp
        env = {}
        if self.cfg.get("pythonpath", True):
            # function tasks are pickled by reference when their module is importable here;
            # the worker imports them from the same places (same host or shared filesystem)
            env["PYTHONPATH"] = os.pathsep.join(import_path())
        env.update({str(k): str(v) for k, v in (self.cfg.get("environment") or {}).items()})
        master_td, wtd, n_workers = self._sizes(env)
        try:
            master = self.client.pilot.submit_raptors(rp.TaskDescription(master_td))[0]
            workers = master.submit_workers(
                [rp.TaskDescription(dict(wtd)) for _ in range(n_workers)])
        except Exception as exc:
            raise BackendError(f"could not start the raptor master/worker: {exc}") from exc
        self.master = master
        self.uids.update([master.uid, *(w.uid for w in workers)])
        self.held_cores = cores_of(master_td) + len(workers) * cores_of(wtd)
        log.info("raptor %s started with %d worker(s) of %d core(s)", master.uid,
                 len(workers), cores_of(wtd))
        self.client.changed()
        total = self.total_cores() or self._pilot_cores()
        if self.held_cores >= total and not self._small_pilot_logged:
            self._small_pilot_logged = True
            log.info("raptor master and workers take all %d core(s) of the pilot: function "
                     "tasks and executable tasks alternate (raptor is stopped for executables "
                     "and started again for the next function task)", total)
        return master.uid

    def _retire(self) -> None:
        """Stop the idle raptor so waiting executables get its cores.

        Its uids leave ``uids`` first, so their final states are not taken for a failure
        (:meth:`raptor_ended`); ``master = None`` makes the next function task start a fresh
        master instead of being sent to this dying one.
        """
        master = self.master
        self.master = None
        uids = list(self.uids)
        self.uids.clear()
        log.info("stopping raptor %s: executable tasks need its %d core(s)", master.uid,
                 self.held_cores)
        self.held_cores = 0
        self.client.changed()
        if uids:  # never an empty list: cancel_tasks([]) cancels EVERY task
            quiet(self.client.tmgr.cancel_tasks, uids)

    def stop(self) -> None:
        """At close: ask the master to stop, then cancel master and workers."""
        master, tmgr = self.master, self.client.tmgr
        self.master = None
        if master is None or tmgr is None:
            return
        if master.state not in self.client.rp.FINAL and master.pilot:
            # rpc() waits for an answer that a dead master never sends: bound it
            t = threading.Thread(target=quiet, args=(master.rpc, "stop"), daemon=True)
            t.start()
            t.join(10)
        quiet(tmgr.cancel_tasks, list(self.uids))

    def rebalance(self) -> None:
        """Stop raptor for executables that wait for its cores; release what may go.

        Held executables go once no function task runs on the current raptor (raptor is
        stopped first); held function tasks go once no released executable still waits to
        start, so a fresh raptor only queues behind running executables, never ahead.
        """
        client = self.client
        if client.closing or client.dead is not None:
            return
        tasks = client.tasks
        self.held_exe = [(e, td) for e, td in self.held_exe if tasks.get(e.rp_uid) is e]
        if self.held_exe:
            if self.master is not None:
                if any(e.raptor == self.master.uid for e in list(tasks.values())):
                    return  # the last function task's end calls us again
                self._retire()
            batch, self.held_exe = self.held_exe, []
            self.exe_waiting.update(e.rp_uid for e, _ in batch)
            log.info("submitting %d executable task(s) that needed raptor's cores",
                     len(batch))
            client.submit_tds([td for _, td in batch], [e for e, _ in batch])
        self.exe_waiting = {u for u in self.exe_waiting
                            if (e := tasks.get(u)) is not None and not e.started}
        if self.exe_waiting or not self.held_fn:
            return
        held, self.held_fn = self.held_fn, []
        tds, entries = [], []
        for entry in held:
            if tasks.get(entry.rp_uid) is not entry:
                continue  # cancelled or failed with its pilot meanwhile
            try:
                td, raptor = client.translate(entry.spec)
            except Exception as exc:
                if tasks.pop(entry.rp_uid, None) is not None:
                    entry.reporter.threadsafe(entry.spec.uid, TaskState.FAILED, error=exc)
                continue
            td.uid = entry.rp_uid
            entry.raptor = raptor
            tds.append(td)
            entries.append(entry)
        if tds:
            client.submit_tds(tds, entries)

    # -- news from RP's callback threads ----------------------------------------------
    def kick(self) -> None:
        """Let the RP thread re-check held tasks."""
        self.client.on_rp_thread(self.rebalance)

    def started(self, rp_uid: str) -> None:
        """Task ``rp_uid`` got its cores."""
        if rp_uid in self.exe_waiting:  # held function tasks may go
            self.kick()

    def finished(self, entry: Entry) -> None:
        """A task reached a final state: its cores may be what someone waits for."""
        if (self.held_exe and entry.raptor is not None) or entry.rp_uid in self.exe_waiting:
            self.kick()

    def raptor_ended(self, uid: str, state: str, task: Any) -> None:
        """A raptor master or worker ended while we still need it.

        Only the current raptor counts: one stopped on purpose (:meth:`_retire`) left
        ``uids`` before its tasks were cancelled.
        """
        client = self.client
        master = self.master  # read first: a newer master never owns an older uid
        if client.closing or master is None or uid not in self.uids:
            return
        err = BackendError(
            f"raptor task {uid} ended in state {state} ({getattr(task, 'exception', None)}); "
            f"function tasks cannot run (logs: {client.pilot_sandbox})")
        self.master = None  # the next function task starts a fresh one
        uids = list(self.uids)
        self.uids.clear()  # the rest of this raptor ending is no news
        self.held_cores = 0
        client.changed()
        for rp_uid, entry in list(client.tasks.items()):
            if entry.raptor == master.uid and client.tasks.pop(rp_uid, None) is not None:
                entry.reporter.threadsafe(entry.spec.uid, TaskState.FAILED, error=err)
        if uids:  # never an empty list: cancel_tasks([]) cancels EVERY task
            client.on_rp_thread(quiet, client.tmgr.cancel_tasks, uids)
            self.kick()
