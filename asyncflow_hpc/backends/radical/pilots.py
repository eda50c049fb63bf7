"""Watching the pilot: its activation, its end, and its replacement (``on_pilot_failure``).

When a pilot ends, tasks still bound to it do not all reach a final state on their own; RP
reports final pilot states twice. So the pilot's states are watched here and what was in
flight is failed (``"fail"``) or moved to a new pilot (``"resubmit"``).
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import TYPE_CHECKING, Any

from ...errors import PilotFailedError
from ...tasks import TaskSpec, TaskState
from ..base import Reporter
from .cleanup import quiet
from .environment import ENV_LOCK, rp_environment
from .outcomes import pilot_detail, url_path

if TYPE_CHECKING:
    from .inprocess import InProcessClient

__all__ = ["PilotWatch"]

log = logging.getLogger("asyncflow_hpc.backends.radical")

_FINAL = ("DONE", "FAILED", "CANCELED")


class PilotWatch:
    """The pilot states of one client (RP's pilot callback thread, and the RP thread)."""

    def __init__(self, client: InProcessClient) -> None:
        self.client = client
        #: resolved with the state once the current pilot is active (or ended first)
        self.active: concurrent.futures.Future[str] = concurrent.futures.Future()
        self.ended: dict[str, str] = {}  # pilot uid -> final state
        self.restarts = 0

    def state(self) -> str | None:
        pilot = self.client.pilot
        if pilot is None:
            return None
        return self.ended.get(pilot.uid) or str(pilot.state)

    def ended_pilot(self) -> tuple[str, str, str | None] | None:
        """(uid, state, sandbox) of a pilot that ended, if any did."""
        if not self.ended:
            return None
        uid, state = next(iter(self.ended.items()))
        return uid, state, self.client.pilot_sandbox

    def callback(self, pilot: Any, state: str) -> None:
        """RP's pilot callback."""
        client = self.client
        client.changed()
        if state == "PMGR_ACTIVE" and not self.active.done():
            self.active.set_result(state)
            return
        if state not in _FINAL or pilot.uid in self.ended:
            return  # RP reports final pilot states twice
        self.ended[pilot.uid] = state
        if client.closing:
            return
        sandbox = url_path(pilot.pilot_sandbox) if pilot.pilot_sandbox else client.pilot_sandbox
        log.warning("pilot %s ended in state %s (logs: %s)", pilot.uid, state, sandbox)
        if client.pilot is not None and pilot.uid != client.pilot.uid:
            return  # an old pilot, already replaced
        opts = client.opts
        if opts.on_pilot_failure == "resubmit" and self.restarts < opts.max_pilot_restarts \
                and client.rp_exec is not None:
            self.restarts += 1
            client.on_rp_thread(self._replace, pilot.uid, state)
            return
        err = PilotFailedError(pilot.uid, state, sandbox,
                               pilot_detail(state, self.restarts, opts.max_pilot_restarts,
                                            opts.on_pilot_failure))
        client.dead = err
        if not self.active.done():
            self.active.set_result(state)
        failed = []
        tasks = client.tasks
        for rp_uid, entry in list(tasks.items()):
            if entry.pilot == pilot.uid and tasks.pop(rp_uid, None) is not None:
                if rp_uid not in client.cores.uids:
                    entry.reporter.threadsafe(entry.spec.uid, TaskState.FAILED, error=err)
                    failed.append(rp_uid)
        if failed:  # so RP stops tracking them, best effort
            client.on_rp_thread(quiet, client.tmgr.cancel_tasks, failed)

    def _replace(self, old_uid: str, state: str) -> None:
        """RP thread: a new pilot for the unfinished tasks of a pilot that ended."""
        client = self.client
        if client.closing:
            return
        log.warning("pilot %s ended (%s): starting replacement %d of %d", old_uid, state,
                    self.restarts, client.opts.max_pilot_restarts)
        client.cores.forget()  # held entries are resubmitted below with the rest
        quiet(client.tmgr.remove_pilots, old_uid)
        self.active = concurrent.futures.Future()
        tasks = client.tasks
        try:
            with ENV_LOCK, rp_environment(client.opts.work_dir, client.opts.batch_options):
                client._submit_pilot()
        except Exception as exc:
            err = PilotFailedError(old_uid, state, client.pilot_sandbox,
                                   f"replacement pilot could not be submitted: {exc}")
            client.dead = err
            for rp_uid, entry in list(tasks.items()):
                if tasks.pop(rp_uid, None) is not None:
                    entry.reporter.threadsafe(entry.spec.uid, TaskState.FAILED, error=err)
            return
        moved: dict[Reporter, list[TaskSpec]] = {}
        stale = []
        for rp_uid, entry in list(tasks.items()):
            if entry.pilot == old_uid and tasks.pop(rp_uid, None) is not None:
                stale.append(rp_uid)
                moved.setdefault(entry.reporter, []).append(entry.spec)
        quiet(client.tmgr.cancel_tasks, stale)
        for reporter, specs in moved.items():
            client._submit_sync(specs, reporter)
