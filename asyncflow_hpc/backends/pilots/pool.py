"""PilotPool: several RADICAL-Pilot pilots behind one backend: routed, elastic, walltime-aware.

Each pilot is a :class:`~asyncflow_hpc.backends.radical.RadicalPilotBackend` of its own (its
own RP session and client process), started from a :class:`~.template.PilotTemplate`. The
pool keeps the tasks that wait for room, places each on an active pilot that offers what it
needs (packing, so that idle pilots can go), and once a second (the *tick*) decides:

* **scale out**: ready tasks of a template have waited ``scale_out_after`` seconds and the
  pilots already coming (queued, starting) cannot take them: one more pilot, up to
  ``max_pilots``; ``min_pilots`` are kept running;
* **scale in**: an active pilot with no task for ``idle_timeout`` seconds, nothing waiting for
  its template, above ``min_pilots``: it is ended (a queued one with nothing to do, too);
* **walltime**: a replacement is started when a pilot's time left falls below the measured
  pilot start-up time (x1.5) plus ``drain_margin``; tasks expected to outlast a pilot are not
  placed on it (estimates from the same function's finished tasks, or
  ``task_description["duration"]`` in seconds); ``drain_margin`` seconds before its end the
  tasks still on it are moved to the waiting line (the engine sees one task, one result)
  and the pilot is ended.

A pilot that dies (scancel, node failure) gives its tasks back the same way. Every decision
is a note (``Reporter.note``) that telemetry records and progress shows; each pilot's
node-hours held and used are in :meth:`PilotPool.describe` and in its ``PilotEnded`` note.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import functools
import itertools
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..._threads import in_thread
from ...descriptions import check_number
from ...errors import ConfigurationError, PilotFailedError
from ...tasks import TaskSpec, TaskState
from ..base import ExecutionBackend, Reporter
from ..radical.backend import RadicalPilotBackend
from ..radical.keys import TD_ALIASES
from .pilot import Pilot
from .template import Needs, PilotTemplate, needs_of, template_from

__all__ = ["PilotPool"]

log = logging.getLogger("asyncflow_hpc.backends.pilots")

#: task_description keys the pool reads and RP never sees
POOL_KEYS = frozenset({"pilot", "partition", "duration"})
#: waiting tasks looked at per placement pass (the line is FIFO; this bounds the work)
SCAN = 512
#: consecutive pilots of a template that failed before running: the template is given up
START_FAILURES = 2
_FINAL_PILOT = ("DONE", "FAILED", "CANCELED")


class _Waiting:
    __slots__ = ("spec", "routes", "cores", "since", "hint")

    def __init__(self, spec: TaskSpec, routes: tuple[PilotTemplate, ...], cores: int,
                 since: float, hint: float | None) -> None:
        self.spec = spec
        self.routes = routes
        self.cores = cores
        self.since = since
        self.hint = hint


class PilotPool(ExecutionBackend):
    """Several pilots from ``templates`` (:class:`PilotTemplate` objects or dicts).

    ``PilotPool([PilotTemplate("cpu", site="mycluster", nodes=1, runtime=60, max_pilots=4),
    PilotTemplate("gpu", site="mycluster", partition="gpu", gpus_per_node=4)])``. Tasks go
    to the templates that offer what they need: ``ranks`` x ``cores_per_rank`` cores,
    ``gpus_per_rank`` (tasks without GPUs go to templates without GPUs when there are any),
    ``task_description["pilot"]`` (a template's name) or ``["partition"]``. A task no
    template can run fails at once, naming what each template lacks.
    """

    name = "pilots"
    #: a walltime minute in seconds (tests of the policy shorten it)
    seconds_per_minute = 60.0
    task_keys = RadicalPilotBackend.task_keys | POOL_KEYS
    key_aliases = TD_ALIASES

    def __init__(self, templates: Iterable[PilotTemplate | Mapping[str, Any]], *,
                 scale_out_after: float = 10.0, idle_timeout: float = 30.0,
                 drain_margin: float = 30.0, startup_guess: float = 120.0,
                 work_dir: str | os.PathLike | None = None, name: str | None = None,
                 check_cluster: bool = True) -> None:
        super().__init__()
        if name is not None:
            self.name = name
        self.templates = [template_from(t) for t in templates]
        if not self.templates:
            raise ConfigurationError("PilotPool needs at least one pilot template")
        names = [t.name for t in self.templates]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"pilot template names must differ, got {names}")
        for key, value in (("scale_out_after", scale_out_after), ("idle_timeout", idle_timeout),
                           ("drain_margin", drain_margin), ("startup_guess", startup_guess)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigurationError(f"PilotPool {key} must be seconds >= 0, got {value!r}")
        self.scale_out_after = float(scale_out_after)
        self.idle_timeout = float(idle_timeout)
        self.drain_margin = float(drain_margin)
        self.startup_guess = float(startup_guess)
        self.check_cluster = check_cluster
        if work_dir is None:
            work_dir = Path.cwd() / "asyncflow-work" / \
                f"pilots-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.work_dir = Path(work_dir).absolute()
        self.pilots: list[Pilot] = []
        self._serials = {t.name: itertools.count(1) for t in self.templates}
        self._start_failures = dict.fromkeys(names, 0)
        self._given_up: dict[str, str] = {}  # template -> why no pilot of it can start
        self._routes: dict[Needs, tuple[PilotTemplate, ...]] = {}
        self._waiting: dict[str, _Waiting] = {}
        self._where: dict[str, Pilot] = {}  # task uid -> pilot it is placed on
        self._placed: dict[str, _Waiting] = {}  # task uid -> its routing, while placed
        self._startups: list[float] = []  # submit-to-active seconds of each pilot
        self._history: dict[str, collections.deque[float]] = {}  # task name -> durations
        self._jobs: set[asyncio.Task] = set()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._kick_pending = False
        self._closing = False
        self._early_notes: list[tuple[str, dict[str, Any]]] = []
        self.decisions: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)

    # ================================================================ task descriptions
    def check_task_description(self, td: Mapping[str, Any], task: str = "") -> None:
        """RP's checks for RP's keys; ``pilot`` names a template, ``partition`` one of theirs,
        ``duration`` is seconds; and some template must offer what the task needs."""
        where = f" of task {task!r}" if task else ""
        rp_td = {k: v for k, v in td.items() if k not in POOL_KEYS}
        RadicalPilotBackend.check_task_description(self, rp_td, task)  # type: ignore[arg-type]
        if td.get("duration") is not None:
            check_number("duration", td["duration"], task)
        pilot = td.get("pilot")
        if pilot is not None and pilot not in self._by_name():
            raise ConfigurationError(
                f"task_description['pilot']{where} is {pilot!r}; the pool's pilots are "
                f"{', '.join(sorted(self._by_name()))}")
        part = td.get("partition")
        if part is not None and part not in {t.queue for t in self.templates}:
            raise ConfigurationError(
                f"task_description['partition']{where} is {part!r}; the pool's templates use "
                f"{', '.join(sorted({t.queue or 'the default partition' for t in self.templates}))}")
        needs = needs_of(td)
        if not self._route(needs):
            raise ConfigurationError(self._unroutable(needs, task))

    def _by_name(self) -> dict[str, PilotTemplate]:
        return {t.name: t for t in self.templates}

    def _route(self, needs: Needs) -> tuple[PilotTemplate, ...]:
        routes = self._routes.get(needs)
        if routes is None:
            fits = [t for t in self.templates if t.offers(needs) is None]
            if not needs.gpus and needs.pilot is None:  # CPU work to CPU pilots, if any
                fits = [t for t in fits if not t.node_gpus] or fits
            routes = self._routes[needs] = tuple(fits)
        return routes

    def _unroutable(self, needs: Needs, task: str = "") -> str:
        why = "; ".join(f"{t.name}: {t.offers(needs)}" for t in self.templates)
        name = f"task {task!r}" if task else "a task"
        return f"no pilot template offers what {name} needs ({needs.text()}): {why}"

    # ================================================================ life cycle
    async def _start(self) -> None:
        if self.check_cluster:
            await in_thread(self._check_cluster)
        self._tick_handle = asyncio.get_running_loop().call_later(1.0, self._tick)
        for t in self.templates:
            for _ in range(t.min_pilots):
                self._start_pilot(t, "min_pilots", raise_errors=True)

    def _check_cluster(self) -> None:
        """A template no pilot of which could ever run (more nodes than its partition has):
        refused now, before anything is queued."""
        from ...hpc.schedulers import scheduler_for

        for t in self.templates:
            if t.site is None or t.site.is_rp_shipped:
                continue
            try:
                scheduler = scheduler_for(t.site.scheduler)
                have = scheduler.node_count(t.queue)
                cores = None if t.node_cores_known else scheduler.cores_per_node(t.queue)
            except Exception:  # a scheduler we cannot ask: RP will say
                have = cores = None
            if cores:  # the pool sizes its pilots by the partition's nodes, not this host's
                object.__setattr__(t, "cores_per_node", cores)
            if have is None:
                continue
            part = f"partition {t.queue!r}" if t.queue else "the default partition"
            if have == 0:
                raise ConfigurationError(
                    f"pilot template {t.name!r}: {part} has no nodes on this cluster "
                    "(sinfo lists none); no pilot of it could start")
            if t.nodes > have:
                raise ConfigurationError(
                    f"pilot template {t.name!r} asks for {t.nodes} nodes per pilot but {part} "
                    f"has {have}; no pilot of it could ever start")

    def bind(self, reporter: Reporter) -> None:
        super().bind(reporter)
        early, self._early_notes = self._early_notes, []
        for kind, attributes in early:  # once the engine's listeners are attached
            reporter.loop.call_soon(reporter.note, kind, attributes)
        self._kick()  # tasks may have waited for the engine

    async def _shutdown(self) -> None:
        self._closing = True
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        for p in self.pilots:
            if p.state not in ("draining", "ended"):
                self._stop_pilot(p, "pool shut down", move=False)
        while self._jobs:
            await asyncio.gather(*list(self._jobs), return_exceptions=True)
        err = PilotFailedError("pool", "CLOSED", None, f"pilot pool {self.name!r} shut down")
        for uid in list(self._waiting):
            self._waiting.pop(uid)
            self.reporter.failed(uid, err)

    # ================================================================ work
    def submit(self, specs: Sequence[TaskSpec]) -> None:
        now = time.time()
        for spec in specs:
            td = spec.description or {}
            needs = needs_of(td)
            routes = self._route(needs)
            hint = td.get("duration")
            if POOL_KEYS.intersection(td):
                spec = copy.copy(spec)
                spec.description = {k: v for k, v in td.items() if k not in POOL_KEYS}
            if not routes:
                self._fail_soon(spec.uid, ConfigurationError(self._unroutable(needs, spec.name)))
                continue
            if all(t.name in self._given_up for t in routes):
                self._fail_soon(spec.uid, self._given_up_error(routes))
                continue
            self._waiting[spec.uid] = _Waiting(spec, routes, needs.cores, now,
                                               float(hint) if hint is not None else None)
        self._kick()

    def cancel(self, uid: str) -> None:
        if self._waiting.pop(uid, None) is not None:
            return
        p = self._where.pop(uid, None)
        self._placed.pop(uid, None)
        if p is not None and p.take(uid) is not None:
            p.backend.cancel(uid)
            self._kick()

    def _fail_soon(self, uid: str, error: BaseException) -> None:
        reporter = self.reporter
        reporter.loop.call_soon(reporter.failed, uid, error)

    def _kick(self) -> None:
        """Place waiting tasks soon (once per loop iteration, however many asked)."""
        if self._kick_pending or self._reporter is None or self._closing:
            return
        self._kick_pending = True
        self.reporter.loop.call_soon(self._place)

    def _estimate(self, w: _Waiting) -> float | None:
        if w.hint is not None:
            return w.hint
        seen = self._history.get(w.spec.name)
        return max(seen) if seen else None

    def _place(self) -> None:
        """Put waiting tasks on active pilots: the fullest pilot that still fits (packing,
        so idle pilots can go) with time left for the task's expected duration."""
        self._kick_pending = False
        active = [p for p in self.pilots if p.state == "active" and p.free > 0]
        if not self._waiting or not active:
            return
        now = time.time()
        batches: dict[Pilot, list[TaskSpec]] = {}
        free = sum(p.free for p in active)
        for scanned, (uid, w) in enumerate(list(self._waiting.items())):
            if scanned >= SCAN or free <= 0:
                break
            est = self._estimate(w)
            if est is not None and est + self.drain_margin > \
                    0.8 * w.routes[0].runtime * self.seconds_per_minute:
                est = None  # longer than any pilot of it lives: it cannot wait for a better one
            need = (est or 0.0) + self.drain_margin
            best = None
            for p in active:
                if p.template in w.routes and p.free >= w.cores and p.time_left(now) > need \
                        and (best is None or p.free < best.free):
                    best = p
            if best is None:
                continue
            del self._waiting[uid]
            best.place(w.spec, w.cores)
            self._where[uid] = best
            self._placed[uid] = w
            free -= w.cores
            batches.setdefault(best, []).append(w.spec)
        for p, specs in batches.items():
            p.backend.submit(specs)

    def _requeue(self, given_back: list[_Waiting]) -> None:
        """Tasks given back by a pilot: first in line again, routed as before."""
        if not given_back:
            return
        now = time.time()
        for w in given_back:
            w.since = now
        self._waiting = {**{w.spec.uid: w for w in given_back}, **self._waiting}
        self._kick()

    # ================================================================ reports of one pilot
    def _report_from(self, p: Pilot, uid: str, state: TaskState, value: Any,
                     error: BaseException | None, node: str | None,
                     stamps: tuple[float, float | None] | None = None) -> None:
        entry = p.tasks.get(uid)
        if entry is None or self._where.get(uid) is not p:
            return  # taken back (drain, cancel): this pilot's word no longer counts
        r = self.reporter
        if state is TaskState.RUNNING:
            entry.started = stamps[0] if stamps else time.time()
            r.running(uid, node, stamps[0] if stamps else None)
            return
        end = stamps[1] if stamps and stamps[1] else time.time()
        if entry.started is None:
            entry.started = stamps[0] if stamps else end
        del self._where[uid]
        w = self._placed.pop(uid)
        p.take(uid, end)
        if state is TaskState.FAILED and isinstance(error, PilotFailedError) \
                and not self._closing:
            p.moved += 1
            self._pilot_gone(p, str(error), [w])  # with the rest of its tasks
            return
        if state is TaskState.DONE:
            p.done += 1
            seen = self._history.setdefault(entry.spec.name, collections.deque(maxlen=20))
            seen.append(end - entry.started)
            r.done(uid, value, node, stamps)  # type: ignore[arg-type]
        elif state is TaskState.FAILED:
            r.failed(uid, error, node, stamps)  # type: ignore[arg-type]
        else:
            r.cancelled(uid)
        self._kick()

    # ================================================================ pilots
    def _start_pilot(self, t: PilotTemplate, reason: str, raise_errors: bool = False) -> None:
        serial = next(self._serials[t.name])
        name = f"{t.name}.{serial}"
        try:
            backend = self._make_backend(t, name)
        except ConfigurationError as exc:
            if raise_errors:
                raise
            self._give_up(t, str(exc))
            return
        p = Pilot(t, serial, backend, reason)
        self.pilots.append(p)
        self._decide("PilotStarted", p, reason)
        p.runner = self._spawn(self._run_pilot(p, raise_errors))

    def _make_backend(self, t: PilotTemplate, name: str) -> Any:
        """The backend of one pilot (a RadicalPilotBackend; tests put a fake here)."""
        return RadicalPilotBackend(**t.backend_keywords(), work_dir=self.work_dir / name,
                                   name=f"{self.name}:{name}")

    def _spawn(self, coro: Any) -> asyncio.Task:
        job = asyncio.ensure_future(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    async def _run_pilot(self, p: Pilot, raise_errors: bool) -> None:
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
        self._startups.append(time.time() - p.submitted_at)
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

    def _pilot_gone(self, p: Pilot, why: str, first: Sequence[_Waiting] = ()) -> None:
        """``p`` ended without being asked (killed, failed): its tasks (``first``, the one
        whose failure told) go back in line."""
        if p.state in ("draining", "ended"):
            self._requeue(list(first))
            return
        taken = [*first, *self._take_all(p, cancel=False)]
        p.state = "draining"
        p.end_reason = f"lost: {why}"
        self._decide("PilotLost", p, why, moved=len(taken))
        self._requeue(taken)
        self._close_soon(p)

    def _take_all(self, p: Pilot, cancel: bool) -> list[_Waiting]:
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

    # ================================================================ the tick
    def _tick(self) -> None:
        self._tick_handle = None
        if self._closing:
            return
        try:
            self._watch(time.time())
        except Exception:  # a bug here must not stop the ticks
            log.exception("pilot pool %s: tick failed", self.name)
        self._tick_handle = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _watch(self, now: float) -> None:
        for p in list(self.pilots):  # pilots that ended on their own
            if p.state == "active":
                state = (p.backend.describe() or {}).get("pilot_state")
                if state in _FINAL_PILOT:
                    self._pilot_gone(p, f"pilot job ended ({state})")
        demand = self._demand(now)
        startup = max(self._startups) if self._startups else self.startup_guess
        for t in self.templates:
            if t.name in self._given_up:
                continue
            mine = [p for p in self.pilots if p.template is t]
            live = [p for p in mine if p.live]
            waiting_cores, oldest = demand.get(t.name, (0, 0.0))
            # walltime: replace early enough, drain before the end
            for p in live:
                if p.state != "active":
                    continue
                left = p.time_left(now)
                if left <= self.drain_margin:
                    self._stop_pilot(p, f"walltime: {max(left, 0):.0f} s left")
                    continue
                if not p.replaced and left <= startup * 1.5 + self.drain_margin + 2 \
                        and (p.tasks or waiting_cores or len(live) <= t.min_pilots):
                    p.replaced = True
                    self._start_pilot(t, f"replaces {p.name}: {left:.0f} s of walltime left, "
                                         f"pilots start in ~{startup:.0f} s")
            live = [p for p in self.pilots if p.template is t and p.live]  # with replacements
            usable = [p for p in live if not p.replaced]
            if len(usable) < t.min_pilots:
                self._start_pilot(t, "min_pilots")
                continue
            coming = sum(p.capacity for p in live if p.coming)
            if waiting_cores > coming and len(usable) < t.max_pilots and (
                    not usable or oldest >= self.scale_out_after):
                self._start_pilot(t, f"scale out: {waiting_cores} core(s) of tasks waiting "
                                     f"{oldest:.0f} s, {coming} coming")
                continue
            if waiting_cores:
                continue
            for p in live:  # scale in: one idle pilot per tick
                idle = now - p.idle_since
                if not p.tasks and idle >= self.idle_timeout and len(usable) > t.min_pilots:
                    self._stop_pilot(p, f"scale in: idle {idle:.0f} s")
                    break

    def _demand(self, now: float) -> dict[str, tuple[int, float]]:
        """Per template, the cores of waiting tasks (each counted for its first route that
        is not given up) and the longest wait."""
        out: dict[str, list] = {}
        for w in self._waiting.values():
            t = next((r for r in w.routes if r.name not in self._given_up), None)
            if t is None:
                continue
            entry = out.setdefault(t.name, [0, 0.0])
            entry[0] += w.cores
            entry[1] = max(entry[1], now - w.since)
        return {k: (v[0], v[1]) for k, v in out.items()}

    # ================================================================ introspection
    def costs(self) -> dict[str, Any]:
        """Node-hours held and used, per pilot and in total (utilisation = used / held)."""
        now = time.time()
        rows = [p.describe(now) for p in self.pilots]
        held = sum(r["held_node_hours"] for r in rows)
        used = sum(r["used_node_hours"] for r in rows)
        return {"pilots": rows, "held_node_hours": round(held, 6),
                "used_node_hours": round(used, 6),
                "utilisation": round(used / held, 4) if held else None}

    def describe(self) -> dict[str, Any]:
        costs = self.costs()
        return {"name": self.name, "type": type(self).__name__, "work_dir": str(self.work_dir),
                "templates": [t.describe() for t in self.templates],
                "waiting": len(self._waiting), **costs,
                "given_up": dict(self._given_up) or None,
                "decisions": list(self.decisions)[-5:]}
