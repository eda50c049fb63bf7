"""Small tasks through one RADICAL-Pilot pilot, side by side with Parsl's HighThroughputExecutor.

The same workloads, on the same cores, in the same run: first asyncflow-hpc's RADICAL-Pilot
backend (one pilot, its warm worker pool), then -- with the pilot shut down, so the two never
share the CPU -- Parsl's HTEX with as many workers as the pilot had slots (Parsl is an
optional extra: ``pip install parsl``). Each workload reports tasks/s, the makespan against
the ideal ``n x duration / cores`` for sleeping tasks, and the ratio asyncflow-hpc / Parsl.

Workloads: ``noop`` (function tasks returning their argument), ``true`` (``/bin/true``
executables; a ``bash_app`` on Parsl's side), ``sleep`` (function tasks of ``duration``
seconds), ``chain`` (dependent no-op tasks: seconds per hop).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PilotPoint", "format_points", "run_ours", "run_parsl"]

KINDS = ("noop", "true", "sleep", "chain")


@dataclass
class PilotPoint:
    """One workload on one system."""

    system: str  # "asyncflow-hpc" or "parsl-htex"
    workload: str
    tasks: int
    seconds: float = 0.0
    rate: float = 0.0  # tasks/s (chain: hops/s)
    ideal_s: float | None = None  # sleep: n x duration / cores
    per_hop_ms: float | None = None
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def noop(x: Any) -> Any:
    return x


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


class _PeakRss:
    """Peak resident memory of some processes, sampled every 0.1 s on a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self.peak = dict.fromkeys(self.procs, 0.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def sample(self) -> None:
        for name, proc in self.procs.items():
            try:
                self.peak[name] = max(self.peak[name], proc.memory_info().rss / 2**20)
            except Exception:  # noqa: BLE001 - gone
                pass

    def run(self) -> None:
        while not self.stop.wait(0.1):
            self.sample()

    def __enter__(self) -> _PeakRss:
        self.sample()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sample()


async def _timed(flow: Any, kind: str, n: int, duration: float) -> PilotPoint:
    point = PilotPoint("asyncflow-hpc", kind, n)
    fn = flow.function_task(noop)
    t0 = time.perf_counter()
    if kind == "noop":
        res = await asyncio.gather(*[fn(i) for i in range(n)])
        assert res == list(range(n)), "wrong results"
    elif kind == "true":
        true = flow.executable_task(lambda: ["/bin/true"])
        res = await asyncio.gather(*[true() for _ in range(n)])
        assert res == [""] * n, "wrong results"
    elif kind == "sleep":
        sleeper = flow.function_task(nap)
        await asyncio.gather(*[sleeper(duration) for _ in range(n)])
    else:  # chain
        fut = fn(0)
        for _ in range(n - 1):
            fut = fn(fut)
        await fut
    point.seconds = time.perf_counter() - t0
    point.rate = n / point.seconds
    if kind == "chain":
        point.per_hop_ms = point.seconds / n * 1e3
    return point


async def run_ours(workloads: Sequence[tuple[str, int]], *, duration: float = 0.01,
                   pilot: dict[str, Any] | None = None, work_dir: str | None = None,
                   warm: bool = True) -> tuple[list[PilotPoint], int]:
    """Every workload through one pilot; returns the points and the pool's slots."""
    from ..backends.radical import RadicalPilotBackend
    from ..engine import WorkflowEngine

    work_dir = work_dir or tempfile.mkdtemp(prefix="afhpc-pilot-bench-")
    backend = RadicalPilotBackend(dict(pilot or {"resource": "local.localhost", "cores": 2,
                                                 "runtime": 60}),
                                  work_dir=os.path.join(work_dir, "rp"), warm=warm)
    await backend.start()
    await backend.wait_active(600)
    points: list[PilotPoint] = []
    slots = 0
    try:
        flow = await WorkflowEngine.create(backend=backend, install_signal_handlers=False,
                                           telemetry="", progress="off", journal="",
                                           work_dir=os.path.join(work_dir, "engine"))
        try:
            warm_fn = flow.function_task(noop)
            await warm_fn(0)  # starts the pool (or raptor): not timed
            await flow.executable_task(lambda: ["/bin/true"])()
            info = backend.describe().get("warm")
            if isinstance(info, dict):
                slots = sum(a["slots"] for a in info["agents"].values())
            for kind, n in workloads:
                pids = {"campaign": os.getpid(), "rp-client": backend.client_pid or 0}
                try:
                    with _PeakRss(pids) as rss:
                        point = await _timed(flow, kind, n, duration)
                    point.peak_rss_mb = {k: round(v, 1) for k, v in rss.peak.items()}
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    point = PilotPoint("asyncflow-hpc", kind, n, error=f"{type(exc).__name__}: {exc}")
                if kind == "sleep" and slots:
                    point.ideal_s = n * duration / slots
                points.append(point)
        finally:
            await flow.shutdown(skip_execution_backend=True)
    finally:
        await backend.shutdown()
    return points, slots


def run_parsl(workloads: Sequence[tuple[str, int]], *, workers: int, duration: float = 0.01,
              run_dir: str | None = None) -> list[PilotPoint]:
    """The same workloads through Parsl's HTEX with ``workers`` workers on this machine."""
    import parsl
    from parsl.app.app import bash_app, python_app
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    run_dir = run_dir or tempfile.mkdtemp(prefix="afhpc-parsl-")
    config = Config(
        executors=[HighThroughputExecutor(
            label="htex", address="127.0.0.1", max_workers_per_node=workers,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1))],
        run_dir=run_dir, usage_tracking=0, initialize_logging=False, strategy="none")
    p_noop = python_app(noop)
    p_nap = python_app(nap)

    @bash_app
    def p_true() -> str:
        return "/bin/true"

    points = []
    with parsl.load(config):
        p_noop(0).result()  # workers up: not timed
        for kind, n in workloads:
            point = PilotPoint("parsl-htex", kind, n)
            pids = {"campaign": os.getpid()}
            try:
                with _PeakRss(pids) as rss:
                    t0 = time.perf_counter()
                    if kind == "noop":
                        res = [f.result() for f in [p_noop(i) for i in range(n)]]
                        assert res == list(range(n)), "wrong results"
                    elif kind == "true":
                        codes = [f.result() for f in [p_true() for _ in range(n)]]
                        assert codes == [0] * n, "wrong results"
                    elif kind == "sleep":
                        [f.result() for f in [p_nap(duration) for _ in range(n)]]
                    else:
                        fut = p_noop(0)
                        for _ in range(n - 1):
                            fut = p_noop(fut)
                        fut.result()
                    point.seconds = time.perf_counter() - t0
                point.rate = n / point.seconds
                point.peak_rss_mb = {k: round(v, 1) for k, v in rss.peak.items()}
                if kind == "chain":
                    point.per_hop_ms = point.seconds / n * 1e3
                if kind == "sleep":
                    point.ideal_s = n * duration / workers
            except Exception as exc:  # noqa: BLE001 - reported in the table
                point.error = f"{type(exc).__name__}: {exc}"
            points.append(point)
    parsl.clear()
    return points


def format_points(ours: Sequence[PilotPoint], theirs: Sequence[PilotPoint] = ()) -> str:
    """A table: one row per workload, ours, Parsl's and the ratio."""
    by_kind = {p.workload: p for p in theirs}
    lines = [f"{'workload':<8} {'tasks':>8} {'asyncflow-hpc':>16} {'parsl-htex':>14} "
             f"{'ratio':>7}  notes"]
    for p in ours:
        q = by_kind.get(p.workload)
        ratio = f"{p.rate / q.rate:.2f}" if q and q.rate and p.rate else "-"
        mine = "error" if p.error else f"{p.rate:,.0f}/s"
        other = "-" if q is None else ("error" if q.error else f"{q.rate:,.0f}/s")
        notes = []
        if p.per_hop_ms is not None:
            notes.append(f"{p.per_hop_ms:.2f} ms/hop")
        if p.ideal_s:
            notes.append(f"makespan {p.seconds:.2f} s = {p.seconds / p.ideal_s:.2f}x ideal")
        if p.peak_rss_mb:
            notes.append("peak RSS " + ", ".join(f"{k} {v:.0f} MB" for k, v in
                                                  p.peak_rss_mb.items()))
        if p.error:
            notes.append(p.error)
        if q is not None and q.error:
            notes.append(f"parsl: {q.error}")
        lines.append(f"{p.workload:<8} {p.tasks:>8,} {mine:>16} {other:>14} {ratio:>7}  "
                     + "; ".join(notes))
    return "\n".join(lines)
