"""Run workloads on a backend and turn wall-clock times into comparable figures.

Why these figures: *throughput* (tasks/s) and *per-task overhead* say what the engine costs;
*makespan against the ideal* and *utilisation* say how much of the resources a workload got,
which is what matters once tasks do real work; *start-up* (backend + engine) is paid once
per campaign but dominates short ones on pilot systems, and *warm-up* (the first function
task and the first executable, run once before anything is timed) is what a backend starts
lazily: RADICAL-Pilot's raptor master and worker for function tasks. All are derived from the
:class:`~asyncflow_hpc.bench.workloads.Workload` description, so every backend and baseline
is measured the same way.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import platform
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .._version import __version__
from .workloads import Workload

__all__ = ["Measurement", "best_of", "machine_info", "measure", "open_engine", "run_suite",
           "slots_of", "warm_up"]

SCHEMA = "asyncflow-hpc.bench/1"


@dataclasses.dataclass
class Measurement:
    """One workload through one engine (or baseline): the best of ``repeat`` runs."""

    workload: str
    label: str
    engine: str                      # "asyncflow-hpc", "asyncio" or "radical.asyncflow"
    backend: str
    tasks: int
    completed: int = 0
    repeat: int = 0
    times_s: list[float] = dataclasses.field(default_factory=list)
    makespan_s: float | None = None  # best of the runs
    ideal_s: float | None = None
    slots: int | None = None
    throughput: float | None = None  # tasks/s
    overhead_per_task_s: float | None = None
    utilisation: float | None = None
    startup_s: float | None = None
    warmup_s: float | None = None    # first function task + first executable, before timing
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def ok(self) -> bool:
        return self.error is None and self.makespan_s is not None


#: backends that run nothing: their ideal makespan is zero whatever the tasks would do
DRY_BACKENDS = {"dryrun", "noop"}


def derive(m: Measurement, w: Workload) -> Measurement:
    """Fill the derived figures of ``m`` from its best makespan and the workload's shape.

    per-task overhead = (makespan - ideal) / tasks: what each task adds to the wall clock
    beyond the ideal; utilisation = useful core-seconds / (slots x makespan), only for tasks
    that hold cores and do work.
    """
    if not m.times_s:
        return m
    best = min(m.times_s)
    m.makespan_s = best
    dry = m.backend in DRY_BACKENDS
    m.ideal_s = 0.0 if dry else w.ideal(m.slots)
    m.throughput = m.completed / best if best > 0 else None
    m.overhead_per_task_s = max(0.0, best - m.ideal_s) / m.tasks
    work = 0.0 if dry else w.work()
    slots = w.workers or m.slots  # bodies on executor threads: those are the slots
    m.utilisation = work / (slots * best) if work and slots and best > 0 else None
    return m


async def best_of(repeat: int, fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs (garbage collected before each) and the last result."""
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        gc.collect()
        t0 = time.perf_counter()
        result = await fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


async def timed_runs(m: Measurement, repeat: int, run: Callable[[], Awaitable[int]],
                     done_counter: Callable[[], int] | None = None) -> None:
    """Run ``repeat`` times into ``m``; checks that every run finished ``m.tasks`` tasks.

    ``done_counter`` (the engine's own count of DONE tasks) cross-checks the run's count, so
    a workload cannot report tasks the engine never finished.
    """
    m.repeat = max(1, repeat)
    for _ in range(m.repeat):
        gc.collect()
        before = done_counter() if done_counter else None
        t0 = time.perf_counter()
        completed = await run()
        m.times_s.append(time.perf_counter() - t0)
        if before is not None and done_counter is not None:
            engine_done = done_counter() - before
            if engine_done != completed:
                raise AssertionError(f"{m.label}: run counted {completed} tasks, "
                                     f"the engine finished {engine_done}")
        if completed != m.tasks:
            raise AssertionError(f"{m.label}: {completed} of {m.tasks} tasks finished")
        m.completed = completed


def slots_of(backend: Any) -> int | None:
    """Cores a backend runs executables on at once, as far as it says."""
    for attr in ("max_processes", "cores", "slots"):
        value = getattr(backend, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    try:
        info = backend.describe()
    except Exception:  # noqa: BLE001 - describe() is informational only
        return None
    pilot = info.get("pilot") if isinstance(info.get("pilot"), dict) else {}
    for where in (info, pilot):  # RADICAL-Pilot: the pilot description's cores
        for key in ("cores", "slots", "max_processes"):
            if isinstance(where.get(key), int) and where[key] > 0:
                return int(where[key])
    # RADICAL-Pilot sized by nodes: nodes x the resource config's cores per node (what its
    # agent schedules on; local.localhost fakes 8 a node)
    cores = getattr(backend, "_pilot_cores", None)
    try:
        value = cores() if callable(cores) else None
    except Exception:  # noqa: BLE001 - informational only
        value = None
    return value if isinstance(value, int) and value > 0 else None


def _warm_slots(backend: Any) -> int | None:
    """Slots of a RADICAL-Pilot backend's warm worker pools (running and starting)."""
    try:
        info = backend.describe().get("warm")
    except Exception:  # noqa: BLE001 - informational only
        return None
    if not isinstance(info, dict) or not info.get("agents"):
        return None
    return sum(int(a.get("slots") or 0) for a in info["agents"].values()) + \
        int(info.get("starting_slots") or 0) or None


async def open_engine(backend: str = "local", *, slots: int | None = None,
                      options: dict[str, Any] | None = None) -> tuple[Any, float]:
    """Start ``backend`` and an engine on it; return (engine, start-up seconds).

    ``slots`` bounds concurrent executables on the local backend (default: its own choice;
    0: no bound).
    """
    from ..backends import create_backend
    from ..engine import WorkflowEngine

    t0 = time.perf_counter()
    opts = dict(options or {})
    if backend == "local":
        opts.setdefault("executor", ThreadPoolExecutor(thread_name_prefix="bench"))
        if slots is not None:
            opts.setdefault("max_processes", slots)
    be = await create_backend(backend, **opts)
    # no telemetry, progress or journal from the environment (``asyncflow-hpc run`` sets
    # them): the benchmark measures the engine, not its observers
    flow = await WorkflowEngine.create(backend=be, install_signal_handlers=False,
                                       telemetry="", progress="off", journal="")
    return flow, time.perf_counter() - t0


async def warm_up(flow: Any, kinds: Collection[str] = ("function", "executable")) -> float:
    """One function task and/or one ``/bin/true``: what a backend starts on first use.

    Run once before anything is timed, so that a lazily started executor (RADICAL-Pilot's
    raptor master and worker) counts as warm-up, not as the first workload's makespan. Only
    the ``kinds`` the workloads use are warmed: on a small pilot, raptor holds cores that
    executables would otherwise get.
    """
    @flow.function_task
    async def warm_function() -> int:
        return 1

    @flow.executable_task
    async def warm_executable() -> str:
        return "/bin/true"

    t0 = time.perf_counter()
    if "function" in kinds:
        await warm_function()
    if "executable" in kinds:
        await warm_executable()
    return time.perf_counter() - t0


async def measure(flow: Any, w: Workload, repeat: int, *, backend: str,
                  slots: int | None = None, startup_s: float | None = None,
                  engine: str = "asyncflow-hpc", warmup_s: float | None = None) -> Measurement:
    """``w`` through ``flow``; failures are recorded in the measurement, not raised."""
    m = Measurement(w.name, w.label, engine, backend, w.tasks, slots=slots, startup_s=startup_s,
                    warmup_s=warmup_s)
    counts = getattr(flow, "counts", None)
    counter = (lambda: counts["done"]) if isinstance(counts, dict) else None
    try:
        await timed_runs(m, repeat, w.build(flow), counter)
    except Exception as exc:  # noqa: BLE001 - a failed workload is a result, not a crash
        m.error = f"{type(exc).__name__}: {exc}"[:500]
    return derive(m, w) if m.error is None else m


async def run_suite(workloads: Sequence[Workload], *, backend: str = "local", repeat: int = 3,
                    slots: int | None = None,
                    options: dict[str, Any] | None = None) -> list[Measurement]:
    """Every workload through one engine on ``backend`` (started once, start-up recorded)."""
    flow, startup = await open_engine(backend, slots=slots, options=options)
    try:
        warm = await warm_up(flow, {w.kind for w in workloads})
        used = slots or next((s for s in map(slots_of, flow.backends.values()) if s), None)
        pool = next((s for s in map(_warm_slots, flow.backends.values()) if s), None)
        if pool:
            # RADICAL-Pilot's warm pool runs one body per worker, awaiting or not: function
            # tasks fill its slots in waves (executables keep the pilot's cores as slots)
            workloads = [dataclasses.replace(w, uses_cores=True, workers=pool)
                         if w.kind == "function" and w.duration > 0 else w for w in workloads]
        return [await measure(flow, w, repeat, backend=backend, slots=used, startup_s=startup,
                              warmup_s=warm)
                for w in workloads]
    finally:
        await flow.shutdown()


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured: they mean little without it."""
    info: dict[str, Any] = {
        "host": socket.gethostname(), "platform": platform.platform(),
        "python": sys.version.split()[0], "cpus": os.cpu_count(),
        "asyncflow_hpc": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        from importlib.metadata import version
        info["radical.asyncflow"] = version("radical.asyncflow")
    except Exception:  # noqa: BLE001 - not installed
        info["radical.asyncflow"] = None
    if hasattr(os, "getloadavg"):  # a busy machine explains a slow run
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    for var in ("SLURM_JOB_ID", "SLURM_JOB_NUM_NODES", "SLURM_NODEID", "PBS_JOBID"):
        if var in os.environ:
            info[var.lower()] = os.environ[var]
    try:
        import psutil
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001 - optional detail
        pass
    return info


