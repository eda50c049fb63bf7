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
from .elastic import Elastic
from .lifecycle import PilotLife
from .pilot import Pilot, Waiting
from .template import Needs, PilotTemplate, needs_of, template_from

__all__ = ["PilotPool"]

log = logging.getLogger("asyncflow_hpc.backends.pilots")

#: task_description keys the pool reads and RP never sees
POOL_KEYS = frozenset({"pilot", "partition", "duration"})
#: waiting tasks looked at per placement pass (the line is FIFO; this bounds the work)
SCAN = 512


class PilotPool(PilotLife, Elastic, ExecutionBackend):
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
        self._waiting: dict[str, Waiting] = {}
        self._where: dict[str, Pilot] = {}  # task uid -> pilot it is placed on
        self._placed: dict[str, Waiting] = {}  # task uid -> its routing, while placed
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
            self._waiting[spec.uid] = Waiting(spec, routes, needs.cores, now,
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

    def _estimate(self, w: Waiting) -> float | None:
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
        # only the head of the line: copying all of it per completion would be quadratic
        for uid, w in list(itertools.islice(self._waiting.items(), SCAN)):
            if free <= 0:
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

    def _requeue(self, given_back: list[Waiting]) -> None:
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
