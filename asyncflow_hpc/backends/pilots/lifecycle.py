"""Starting, stopping and losing the pilots of a :class:`~.pool.PilotPool` (a part of it).

A pilot is started from a template (:meth:`PilotLife._start_pilot`), waited for until RP
says it runs, stopped on purpose (scale in, walltime, shutdown: its tasks go back in line) or
lost (killed: the same). A template whose pilots keep failing to start is given up. Every
step is a note for the engine's listeners (telemetry, progress).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import ConfigurationError, PilotFailedError
from ..base import Reporter
from ..radical.backend import RadicalPilotBackend
from .pilot import Pilot, Waiting
from .template import PilotTemplate

__all__ = ["PilotLife"]

log = logging.getLogger("asyncflow_hpc.backends.pilots")

#: consecutive pilots of a template that failed before running: the template is given up
START_FAILURES = 2


class PilotLife:
    """Mixed into :class:`~.pool.PilotPool`, whose state it uses."""

    name: str
    pilots: list[Pilot]
    work_dir: Any
    seconds_per_minute: float
    decisions: Any
    _serials: dict[str, Any]
    _start_failures: dict[str, int]
    _given_up: dict[str, str]
    _waiting: dict[str, Waiting]
    _where: dict[str, Pilot]
    _placed: dict[str, Waiting]
    _startups: list[float]
    _jobs: set[asyncio.Task]
    _early_notes: list[tuple[str, dict[str, Any]]]
    _reporter: Reporter | None
    reporter: Reporter

    if TYPE_CHECKING:  # the pool's own
        def _kick(self) -> None: ...
        def _requeue(self, given_back: list[Waiting]) -> None: ...
        def _fail_soon(self, uid: str, error: BaseException) -> None: ...
        def _report_from(self, p: Pilot, *args: Any) -> None: ...

    def _start_pilot(self, t: PilotTemplate, reason: str,
                     raise_errors: bool = False) -> Pilot | None:
        serial = next(self._serials[t.name])
        name = f"{t.name}.{serial}"
        try:
            backend = self._make_backend(t, name)
        except ConfigurationError as exc:
            if raise_errors:
                raise
            self._give_up(t, str(exc))
            return None
        p = Pilot(t, serial, backend, reason)
        self.pilots.append(p)
        self._decide("PilotStarted", p, reason)
        p.runner = self._spawn(self._run_pilot(p))
        return p

    def _make_backend(self, t: PilotTemplate, name: str) -> Any:
        """The backend of one pilot (a RadicalPilotBackend; tests put a fake here)."""
        return RadicalPilotBackend(**t.backend_keywords(), work_dir=self.work_dir / name,
                                   name=f"{self.name}:{name}")

    def _spawn(self, coro: Any) -> asyncio.Task:
        job = asyncio.ensure_future(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    async def _run_pilot(self, p: Pilot) -> None:
        """Start ``p``'s backend and wait until the pilot runs (its ``runner``)."""
        loop = asyncio.get_running_loop()
        try:
            await p.backend.start()
            p.uid = p.backend.pilot_uid
            p.backend.bind(Reporter(functools.partial(self._report_from, p), loop))
            if p.state != "starting":  # stopped while its backend started
                self._close_soon(p)
                return
            p.state = "queued"
            await p.backend.wait_active()
        except asyncio.CancelledError:  # stopped while queued: _stop_pilot closes it
            return
        except Exception as exc:  # noqa: BLE001 - any start failure ends this pilot
            if p.state in ("starting", "queued"):
                self._start_failed(p, exc)
            self._close_soon(p)
            return
        if p.state != "queued":  # stopped while it waited
            return
        # a replacement that had to wait for its predecessor's nodes: counted from when
        # they were given back, or the wait the pool itself caused would lengthen every lead
        since = p.submitted_at
        if p.replaces is not None and p.replaces.stopped_at is not None:
            since = max(since, p.replaces.stopped_at)
        self._startups.append(time.time() - since)
        # the shortest start seen is a pilot that never queued: the rest of a start is queue
        p.activate(min(self._startups) if len(self._startups) > 1 else None,
                   p.template.runtime * self.seconds_per_minute)
        self._start_failures[p.template.name] = 0
        self._decide("PilotActive", p, f"active after {self._startups[-1]:.0f} s",
                     startup_s=round(self._startups[-1], 1))
        self._kick()

    def _start_failed(self, p: Pilot, exc: BaseException) -> None:
        p.end("failed to start", exc)
        t = p.template
        self._start_failures[t.name] += 1
        self._decide("PilotFailed", p, f"could not start: {exc}")
        if self._start_failures[t.name] >= START_FAILURES and not any(
                q.live for q in self.pilots if q.template is t):
            self._give_up(t, f"{START_FAILURES} pilots in a row failed to start; the last: {exc}")

    def _give_up(self, t: PilotTemplate, why: str) -> None:
        """No pilot of ``t`` can start: the tasks only it could run fail, naming why."""
        self._given_up[t.name] = why
        self.decisions.append({"at": time.time(), "action": "TemplateFailed",
                               "template": t.name, "reason": why})
        self._note("PilotDecision", {"pool": self.name, "action": "TemplateFailed",
                                     "template": t.name, "reason": why})
        for uid, w in list(self._waiting.items()):
            if all(r.name in self._given_up for r in w.routes):
                del self._waiting[uid]
                self._fail_soon(uid, self._given_up_error(w.routes))

    def _given_up_error(self, routes: tuple[PilotTemplate, ...]) -> PilotFailedError:
        t = routes[0]
        return PilotFailedError(t.name, "FAILED", None,
                                f"no pilot of template {t.name!r} could start: "
                                f"{self._given_up.get(t.name, '')}")

    def _stop_pilot(self, p: Pilot, reason: str, move: bool = True) -> None:
        """End ``p`` on purpose; its tasks go back to the waiting line (``move``), else
        they are reported cancelled."""
        if p.state in ("draining", "ended"):
            return
        taken = self._take_all(p, cancel=True)
        was = p.state
        p.state = "draining"
        p.stopped_at = time.time()
        p.end_reason = reason
        self._decide("PilotStopped", p, reason, moved=len(taken) if move else 0, was=was)
        if move:
            self._requeue(taken)
        else:
            for w in taken:
                self.reporter.cancelled(w.spec.uid)
        if was == "queued" and p.runner is not None:
            p.runner.cancel()  # no longer waiting for it to become active
        if was != "starting":  # a starting one closes once its backend has started
            self._close_soon(p)

    def _pilot_gone(self, p: Pilot, why: str, first: Sequence[Waiting] = ()) -> None:
        """``p`` ended without being asked (killed, failed): its tasks (``first``, the one
        whose failure told) go back in line."""
        if p.state in ("draining", "ended"):
            self._requeue(list(first))
            return
        taken = [*first, *self._take_all(p, cancel=False)]
        p.state = "draining"
        p.stopped_at = time.time()
        p.end_reason = f"lost: {why}"
        self._decide("PilotLost", p, why, moved=len(taken))
        self._requeue(taken)
        self._close_soon(p)

    def _take_all(self, p: Pilot, cancel: bool) -> list[Waiting]:
        """Every task of ``p``, taken back (and cancelled there, with ``cancel``)."""
        taken = []
        for uid in list(p.tasks):
            entry = p.take(uid)
            self._where.pop(uid, None)
            w = self._placed.pop(uid, None)
            if entry is not None and w is not None:
                if cancel:
                    p.backend.cancel(uid)
                taken.append(w)
        p.moved += len(taken)
        return taken

    def _close_soon(self, p: Pilot) -> None:
        if not p.closing:
            p.closing = True
            self._spawn(self._close(p))

    async def _close(self, p: Pilot) -> None:
        try:
            await p.backend.shutdown()
        except Exception:  # noqa: BLE001 - a pilot that will not close must not stop the others
            log.warning("pilot %s did not shut down cleanly", p.name, exc_info=True)
        p.end(p.end_reason or "ended")
        self._note("PilotEnded", {"pool": self.name, **p.describe()})

    def _note(self, kind: str, attributes: dict[str, Any]) -> None:
        """A note for the engine's listeners; kept until the engine is bound."""
        if self._reporter is None:
            self._early_notes.append((kind, attributes))
        else:
            self.reporter.note(kind, attributes)

    def _decide(self, action: str, p: Pilot, reason: str, **extra: Any) -> None:
        d = {"at": round(time.time(), 3), "action": action, "pilot": p.name,
             "template": p.template.name, "reason": reason, **extra}
        self.decisions.append(d)
        log.info("pilots: %s %s (%s)", action, p.name, reason)
        self._note("PilotDecision", {"pool": self.name, **d})
