"""The standard benchmark workloads, each in two forms: through an engine, and in plain asyncio.

Every workload is built from the same small description (:class:`Workload`): how many tasks
one run submits, what each task costs (``duration`` seconds on ``ranks`` cores), how long the
longest dependency path is, and whether its tasks occupy cores or only wait on the event
loop. The runner derives the ideal makespan and the utilisation from that description, so a
new workload needs no new arithmetic.

``build(flow)`` decorates the tasks on an engine *outside* the timed region and returns one
timed run; the same ``build`` works on radical.asyncflow's engine (same decorators), which is
what makes the side-by-side fair. ``plain()`` is the hand-written asyncio equivalent. Runs
return the number of tasks that finished; values are checked where a backend returns them
(the dry-run backend returns ``None``, so checks skip ``None``).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..hpc.launchers import mpi_launch_prefix

__all__ = ["DEFAULT_SIZES", "WORKLOADS", "Workload", "make_workload", "mpi_prefix"]

Run = Callable[[], Awaitable[int]]
#: plain-asyncio form: called with the number of processes allowed at once (None: no limit)
PlainRun = Callable[[int | None], Awaitable[int]]

#: size used when none is given (tasks, hops, width, workflows...)
DEFAULT_SIZES: dict[str, int] = {
    "noop": 1000, "chain": 1000, "fanout": 1000, "seed": 1000,
    "true": 200, "sleep": 200, "sleep-exe": 16, "mpi": 8, "seed-blocking": 5,
}


@dataclass(frozen=True)
class Workload:
    """One benchmark workload of a given size; see the module docstring."""

    name: str
    size: int
    label: str
    tasks: int
    build: Callable[[Any], Run] = field(repr=False)
    plain: PlainRun | None = field(repr=False, default=None)
    duration: float = 0.0      # seconds each task is busy
    ranks: int = 1             # cores each task holds
    depth: int = 1             # tasks on the longest dependency path
    uses_cores: bool = False   # True: tasks hold a core (executables); False: they await
    portable: bool = True      # radical.asyncflow can run it unchanged
    kind: str = "function"     # "function" or "executable" tasks: what the backend must start
    levels: tuple[int, ...] = ()  # tasks per dependency level, for levelled ideals (see ideal)
    workers: int | None = None    # threads the bodies run on, when not the backend's slots

    def work(self) -> float:
        """Core-seconds of useful work in one run (0 for tasks that only wait or do nothing)."""
        return self.tasks * self.duration * self.ranks if self.uses_cores else 0.0

    def ideal(self, slots: int | None) -> float:
        """Shortest possible makespan on ``slots`` cores, with zero engine overhead.

        The longer of the critical path and the capacity bound (waves of tasks that fit).
        Tasks that do not hold cores are bounded by their critical path only.
        """
        critical = self.depth * self.duration
        slots = self.workers or slots
        if self.levels and slots and self.duration > 0:
            # level by level: each level waits for the one before, in waves of ``slots``
            return sum(math.ceil(n / slots) * self.duration for n in self.levels)
        if not self.uses_cores or not slots or self.duration <= 0:
            return critical
        per_wave = max(1, slots // self.ranks)
        return max(critical, math.ceil(self.tasks / per_wave) * self.duration)


def _count(results: list[Any], expect: Any = None) -> int:
    """Finished results; a value other than None must equal ``expect`` when one is given."""
    if expect is not None:
        bad = [r for r in results if r is not None and r != expect]
        if bad:
            raise AssertionError(f"unexpected results, e.g. {bad[0]!r} (expected {expect!r})")
    return len(results)


async def _one(x: int = 0) -> int:
    return x + 1


def noop(n: int, **_: Any) -> Workload:
    """``n`` independent no-op async function tasks: pure engine overhead."""

    def build(flow: Any) -> Run:
        @flow.function_task
        async def noop_task(x: int = 0) -> int:
            return x + 1

        async def run() -> int:
            return _count(await asyncio.gather(*[noop_task() for _ in range(n)]), 1)
        return run

    async def plain(slots: int | None = None) -> int:
        return len(await asyncio.gather(*[_one() for _ in range(n)]))

    return Workload("noop", n, f"noop x{n}", n, build, plain)


def chain(n: int, **_: Any) -> Workload:
    """A chain of ``n`` dependent tasks: the cost of one dependency hop."""

    def build(flow: Any) -> Run:
        @flow.function_task
        async def step(x: int = 0) -> int:
            return x + 1

        async def run() -> int:
            f = step(0)
            for _ in range(n - 1):
                f = step(f)
            value = await f
            if value is not None and value != n:
                raise AssertionError(f"chain ended at {value}, expected {n}")
            return n
        return run

    async def plain(slots: int | None = None) -> int:
        # each step a task awaiting the previous one: asyncio's own dependency chain
        async def step(prev: asyncio.Task | None) -> int:
            return (await prev if prev is not None else 0) + 1

        t: asyncio.Task | None = None
        for _ in range(n):
            t = asyncio.ensure_future(step(t))
        assert t is not None and await t == n
        return n

    return Workload("chain", n, f"chain x{n}", n, build, plain, depth=n)


def fanout(n: int, **_: Any) -> Workload:
    """One root, ``n`` tasks depending on it, one join of all: fan-out/fan-in."""

    def build(flow: Any) -> Run:
        @flow.function_task
        async def node(x: int = 0) -> int:
            return x + 1

        @flow.function_task
        async def join(*xs: int) -> int:
            return sum(xs)

        async def run() -> int:
            root = node(0)
            total = await join(*[node(root) for _ in range(n)])
            if total is not None and total != 2 * n:
                raise AssertionError(f"fan-in sum {total}, expected {2 * n}")
            return n + 2
        return run

    async def plain(slots: int | None = None) -> int:
        root = await _one(0)
        xs = await asyncio.gather(*[_one(root) for _ in range(n)])
        assert sum(xs) == 2 * n
        return n + 2

    return Workload("fanout", n, f"fan-out/fan-in x{n}", n + 2, build, plain, depth=3)


def seed(n: int, **_: Any) -> Workload:
    """``n`` concurrent small workflows shaped like examples/seed_workflows.py.

    Each is prepare -> simulate(prepare) -> analyse(prepare, simulate), all no-op functions,
    so what is measured is many independent DAGs in flight at once.
    """

    def build(flow: Any) -> Run:
        @flow.function_task
        async def prepare(i: int) -> int:
            return i + 1

        @flow.function_task
        async def simulate(x: int) -> int:
            return x + 1

        @flow.function_task
        async def analyse(a: int, b: int) -> int:
            return a + b

        async def one(i: int) -> Any:
            p = prepare(i)
            return await analyse(p, simulate(p))

        async def run() -> int:
            results = await asyncio.gather(*[one(i) for i in range(n)])
            for i, r in enumerate(results):
                if r is not None and r != 2 * i + 3:
                    raise AssertionError(f"workflow {i} gave {r}, expected {2 * i + 3}")
            return 3 * n
        return run

    async def plain(slots: int | None = None) -> int:
        async def one(i: int) -> int:
            p = await _one(i)
            s = await _one(p)
            return p + s

        await asyncio.gather(*[one(i) for i in range(n)])
        return 3 * n

    return Workload("seed", n, f"seed-shaped workflows x{n}", 3 * n, build, plain, depth=3)


def seed_blocking(n: int, *, duration: float = 0.2, **_: Any) -> Workload:
    """``n`` concurrent workflows ``task3(task1(), task2())`` whose ``async def`` bodies block
    in ``time.sleep(duration)``: the seed example with real work, as migrated scripts have it.

    Bodies must run in the executor's workers, in parallel; the plain form runs the same
    bodies with ``loop.run_in_executor`` on an executor of the same size.
    """
    import time

    # the default ThreadPoolExecutor's size: what the bench's engine and radical.asyncflow use
    workers = min(32, (os.cpu_count() or 1) + 4)

    def build(flow: Any) -> Run:
        @flow.function_task
        async def task1(*_: Any) -> int:
            time.sleep(duration)
            return 1

        @flow.function_task
        async def task2(*_: Any) -> int:
            time.sleep(duration)
            return 2

        @flow.function_task
        async def task3(a: int, b: int) -> int:
            time.sleep(duration)
            return a + b

        async def run() -> int:
            results = await asyncio.gather(*[task3(task1(), task2()) for _ in range(n)])
            return _count(list(results), 3) * 3
        return run

    async def plain(slots: int | None = None) -> int:
        from concurrent.futures import ThreadPoolExecutor

        loop = asyncio.get_running_loop()

        def body(value: int) -> int:
            time.sleep(duration)
            return value

        with ThreadPoolExecutor(workers) as pool:
            async def one() -> int:
                a, b = await asyncio.gather(loop.run_in_executor(pool, body, 1),
                                            loop.run_in_executor(pool, body, 2))
                return await loop.run_in_executor(pool, body, a + b)
            await asyncio.gather(*[one() for _ in range(n)])
        return 3 * n

    return Workload("seed-blocking", n, f"seed workflows, blocking bodies x{n} ({duration:g} s)",
                    3 * n, build, plain, duration=duration, depth=2, uses_cores=True,
                    levels=(2 * n, n), workers=workers)


async def _exec(argv: list[str], limit: asyncio.Semaphore | None = None,
                env: dict[str, str] | None = None) -> bytes:
    if limit is not None:
        async with limit:
            return await _exec(argv, None, env)
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {err.decode()[-200:]}")
    return out


def _limit(slots: int | None, ranks: int = 1) -> asyncio.Semaphore | None:
    """The plain form's bound on processes, matching the engine's ``max_processes``."""
    return asyncio.Semaphore(max(1, slots // ranks)) if slots else None


def true(n: int, **_: Any) -> Workload:
    """``n`` ``/bin/true`` executables: process start-up and reaping per task."""

    def build(flow: Any) -> Run:
        @flow.executable_task
        async def true_exe() -> str:
            return "/bin/true"

        async def run() -> int:
            return _count(await asyncio.gather(*[true_exe() for _ in range(n)]), "")
        return run

    async def plain(slots: int | None = None) -> int:
        limit = _limit(slots)
        return len(await asyncio.gather(*[_exec(["/bin/true"], limit) for _ in range(n)]))

    return Workload("true", n, f"/bin/true executables x{n}", n, build, plain, uses_cores=True,
                    kind="executable")


def sleep(n: int, *, duration: float = 0.05, **_: Any) -> Workload:
    """``n`` async function tasks awaiting ``asyncio.sleep(duration)``: waiting, not computing.

    They hold no core, so the ideal makespan is one ``duration`` however many there are.
    """

    def build(flow: Any) -> Run:
        @flow.function_task
        async def nap(seconds: float) -> float:
            await asyncio.sleep(seconds)
            return seconds

        async def run() -> int:
            return _count(await asyncio.gather(*[nap(duration) for _ in range(n)]), duration)
        return run

    async def plain(slots: int | None = None) -> int:
        return len(await asyncio.gather(*[asyncio.sleep(duration) for _ in range(n)]))

    return Workload("sleep", n, f"sleep({duration:g}) x{n}", n, build, plain, duration=duration)


def sleep_exe(n: int, *, duration: float = 0.2, **_: Any) -> Workload:
    """``n`` ``/bin/sleep DURATION`` executables: each holds a core slot for ``duration``.

    The workload for utilisation and scaling: its ideal makespan is waves of ``slots`` tasks,
    so the gap to the ideal is what the engine and launcher lose.
    """
    command = ["/bin/sleep", f"{duration:g}"]

    def build(flow: Any) -> Run:
        @flow.executable_task
        async def sleeper() -> str:
            return " ".join(command)

        async def run() -> int:
            return _count(await asyncio.gather(*[sleeper() for _ in range(n)]), "")
        return run

    async def plain(slots: int | None = None) -> int:
        limit = _limit(slots)
        return len(await asyncio.gather(*[_exec(command, limit) for _ in range(n)]))

    return Workload("sleep-exe", n, f"sleep {duration:g} executables x{n}", n, build, plain,
                    duration=duration, uses_cores=True, kind="executable")


def mpi_prefix(ranks: int) -> list[str]:
    """``mpirun -n RANKS`` as the local backend builds it (root and oversubscription allowed)."""
    return mpi_launch_prefix(ranks, "mpirun", oversubscribe=True)


class _MpiSessionDirs:
    """A private OpenMPI session directory per task for one run, removed after it.

    Every ``mpirun`` of one user on one host shares ``$TMPDIR/ompi.<host>.<uid>``: when one
    exits (removing it) while another starts (creating it), the second can fail with
    "Directory: /tmp/ompi.<host>.0 Error: File exists". With many short MPI tasks, and other
    users' jobs of the same uid on the machine, that race is real; a directory per task
    (``OMPI_MCA_orte_tmpdir_base``) removes it without changing what is measured.
    """

    def __init__(self, n: int) -> None:
        import tempfile

        self.root = tempfile.mkdtemp(prefix="afhpc-bench-mpi-")
        self.dirs = [os.path.join(self.root, str(i)) for i in range(n)]
        for d in self.dirs:
            os.mkdir(d)

    def env(self, i: int) -> dict[str, str]:
        return {"OMPI_MCA_orte_tmpdir_base": self.dirs[i]}

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _runs_locally(flow: Any) -> bool:
    """True when every backend of ``flow`` runs processes on this machine (local backend)."""
    backends = getattr(flow, "backends", None)
    return bool(backends) and all(getattr(b, "name", "") == "local" for b in backends.values())


def mpi(n: int, *, ranks: int = 2, duration: float = 0.0, **_: Any) -> Workload:
    """``n`` MPI executables of ``ranks`` ranks each (``task_description={"ranks": R}``).

    Each rank runs ``/bin/true`` or, with ``duration``, ``sleep DURATION``; the launcher's own
    start-up (mpirun's daemon, wire-up) is what dominates on one machine. On the local backend
    each task gets its own OpenMPI session directory (see :class:`_MpiSessionDirs`); on
    RADICAL-Pilot the pilot's launcher is used as configured.
    """
    command = f"sleep {duration:g}" if duration > 0 else "/bin/true"

    def build(flow: Any) -> Run:
        @flow.executable_task
        async def mpi_task() -> str:
            return command

        local = _runs_locally(flow)

        async def run() -> int:
            dirs = _MpiSessionDirs(n) if local else None
            try:
                descs = [{"ranks": ranks, **({"environment": dirs.env(i)} if dirs else {})}
                         for i in range(n)]
                return _count(await asyncio.gather(
                    *[mpi_task(task_description=d) for d in descs]))
            finally:
                if dirs:
                    dirs.close()
        return run

    async def plain(slots: int | None = None) -> int:
        # bounded like the local backend's max_processes: one slot per task, whatever its ranks
        argv, limit = mpi_prefix(ranks) + command.split(), _limit(slots)
        dirs = _MpiSessionDirs(n)
        try:
            return len(await asyncio.gather(
                *[_exec(argv, limit, {**os.environ, **dirs.env(i)}) for i in range(n)]))
        finally:
            dirs.close()

    # radical.asyncflow's local backend ignores ranks: it would run different work
    return Workload("mpi", n, f"MPI tasks x{n} ({ranks} ranks)", n, build, plain,
                    duration=duration, ranks=ranks, uses_cores=True, portable=False,
                    kind="executable")


WORKLOADS: dict[str, Callable[..., Workload]] = {
    "noop": noop, "chain": chain, "fanout": fanout, "seed": seed,
    "true": true, "sleep": sleep, "sleep-exe": sleep_exe, "mpi": mpi,
    "seed-blocking": seed_blocking,
}


def make_workload(name: str, size: int | None = None, *, duration: float | None = None,
                  ranks: int = 2) -> Workload:
    """The workload ``name`` at ``size`` (its default size when None)."""
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose from: {', '.join(WORKLOADS)}")
    n = DEFAULT_SIZES[name] if size is None else size
    if n < 1:
        raise ValueError(f"size must be >= 1, got {n}")
    options: dict[str, Any] = {"ranks": ranks}
    if duration is not None:
        options["duration"] = duration
    return WORKLOADS[name](n, **options)
