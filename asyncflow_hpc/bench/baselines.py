"""Side-by-side: asyncflow-hpc, plain asyncio and radical.asyncflow on the same workloads.

The three run in the same process, one after the other, on the same machine state, so their
ratio means something even on a noisy laptop. Plain asyncio is the floor (no engine at all);
radical.asyncflow is what users move from. radical.asyncflow is optional (``pip install
radical.asyncflow``): when it is not importable the comparison says so and goes on with the
other two. Its chains cost tens of milliseconds per hop (a 1,000-hop chain took 27 s on the
2-core machine of docs/benchmarking.md), so workloads larger than ``reference_max_tasks`` are
left out for it rather than stalling the run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .runner import Measurement, derive, measure, open_engine, timed_runs, warm_up
from .workloads import Workload

__all__ = ["Comparison", "compare", "format_comparison", "open_reference", "plain_asyncio",
           "reference_available"]

REFERENCE = "radical.asyncflow"


def reference_available() -> bool:
    """radical.asyncflow importable here (without importing it)."""
    try:
        return importlib.util.find_spec(REFERENCE) is not None
    except (ImportError, ValueError):
        return False


@dataclasses.dataclass
class Comparison:
    """One workload's three measurements and their ratios (None where one is missing)."""

    workload: str
    label: str
    tasks: int
    asyncflow_hpc: Measurement
    asyncio: Measurement
    reference: Measurement | None
    reference_note: str | None = None

    @property
    def ratio_vs_asyncio(self) -> float | None:
        """asyncflow-hpc time / plain asyncio time (lower is better; 1.0 = no overhead)."""
        return _ratio(self.asyncflow_hpc, self.asyncio)

    @property
    def reference_speedup(self) -> float | None:
        """radical.asyncflow time / asyncflow-hpc time (higher: asyncflow-hpc faster)."""
        return _ratio(self.reference, self.asyncflow_hpc) if self.reference else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload, "label": self.label, "tasks": self.tasks,
            "asyncflow_hpc": self.asyncflow_hpc.as_dict(), "asyncio": self.asyncio.as_dict(),
            REFERENCE: self.reference.as_dict() if self.reference else None,
            "reference_note": self.reference_note,
            "ratio_vs_asyncio": self.ratio_vs_asyncio, "reference_speedup": self.reference_speedup,
        }


def _ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    if a is None or b is None or not a.ok or not b.ok or not b.makespan_s:
        return None
    return a.makespan_s / b.makespan_s  # type: ignore[operator]


async def plain_asyncio(w: Workload, repeat: int, slots: int | None = None) -> Measurement:
    """``w`` written directly with asyncio (gather, tasks, create_subprocess_exec).

    ``slots`` bounds concurrent processes with a semaphore, as ``max_processes`` does for the
    engine; None runs them all at once.
    """
    m = Measurement(w.name, w.label, "asyncio", "asyncio", w.tasks, slots=slots, startup_s=0.0)
    if w.plain is None:
        m.error = "no plain-asyncio form"
        return m
    try:
        plain = w.plain
        await timed_runs(m, repeat, lambda: plain(slots))
    except Exception as exc:  # noqa: BLE001 - recorded, the comparison goes on
        m.error = f"{type(exc).__name__}: {exc}"[:500]
    return derive(m, w) if m.error is None else m


async def open_reference(work_dir: str | None = None) -> tuple[Any, float]:
    """radical.asyncflow's engine on its thread backend; (engine, start-up seconds).

    Its engine makes an ``asyncflow.session.*`` folder in its work dir (the cwd by default):
    callers pass a temporary one, so a benchmark leaves nothing behind.
    """
    from radical.asyncflow import LocalExecutionBackend, WorkflowEngine

    t0 = time.perf_counter()
    backend = await LocalExecutionBackend(ThreadPoolExecutor())
    flow = await WorkflowEngine.create(backend=backend, work_dir=work_dir)
    return flow, time.perf_counter() - t0


async def compare(workloads: Sequence[Workload], *, repeat: int = 3, reference: bool = True,
                  reference_max_tasks: int = 2000, reference_repeat: int | None = None,
                  slots: int | None = None) -> list[Comparison]:
    """Each workload through asyncflow-hpc (local backend), plain asyncio and radical.asyncflow.

    Same freedom for all: with ``slots`` None, executables are not bounded (radical.asyncflow
    cannot bound them, plain asyncio does not), so the comparison is of engine overhead; with
    ``slots``, asyncflow-hpc and plain asyncio run at most that many processes at once.
    """
    flow, startup = await open_engine("local", slots=slots or 0)
    rows: list[Comparison] = []
    try:
        warm = await warm_up(flow, {w.kind for w in workloads})
        for w in workloads:
            ours = await measure(flow, w, repeat, backend="local", slots=slots, startup_s=startup,
                                 warmup_s=warm)
            base = await plain_asyncio(w, repeat, slots)
            rows.append(Comparison(w.name, w.label, w.tasks, ours, base, None))
    finally:
        await flow.shutdown()
    if reference:
        await _reference_rows(rows, workloads, reference_repeat or repeat, reference_max_tasks,
                              slots)
    else:
        for row in rows:
            row.reference_note = "not requested"
    return rows


async def _reference_rows(rows: list[Comparison], workloads: Sequence[Workload], repeat: int,
                          max_tasks: int, slots: int | None) -> None:
    """Fill the radical.asyncflow column (or say why it is empty)."""
    if not reference_available():
        for row in rows:
            row.reference_note = f"{REFERENCE} not installed"
        return
    todo = []
    for row, w in zip(rows, workloads, strict=True):
        if not w.portable:
            row.reference_note = "n/a (its local backend ignores ranks)"
        elif w.tasks > max_tasks:
            row.reference_note = f"skipped (> {max_tasks} tasks)"
        else:
            todo.append((row, w))
    if not todo:
        return
    with tempfile.TemporaryDirectory(prefix="asyncflow-hpc-reference-") as work_dir:
        try:
            flow, startup = await open_reference(work_dir)
        except Exception as exc:  # noqa: BLE001 - a broken install must not sink the comparison
            for row, _ in todo:
                row.reference_note = f"{REFERENCE} failed to start: {exc}"
            return
        try:
            warm = await warm_up(flow, {w.kind for _, w in todo})
            for row, w in todo:
                row.reference = await measure(flow, w, repeat, backend="local", slots=slots,
                                              startup_s=startup, engine=REFERENCE, warmup_s=warm)
        finally:
            await flow.shutdown()


def _ms(m: Measurement | None) -> str:
    if m is None:
        return "-"
    if not m.ok:
        return "error"
    t = m.makespan_s or 0.0
    return f"{t * 1e3:,.1f} ms" if t < 10 else f"{t:,.1f} s"


def _x(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def format_comparison(rows: Sequence[Comparison], markdown: bool = False) -> str:
    """The side-by-side as an aligned text table, or as a markdown table for the README."""
    head = ["workload", "asyncflow-hpc", "plain asyncio", "ratio", REFERENCE, "speed-up"]
    body = [[r.label, _ms(r.asyncflow_hpc), _ms(r.asyncio), _x(r.ratio_vs_asyncio),
             _ms(r.reference) if r.reference else (r.reference_note or "-"),
             _x(r.reference_speedup)] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    from .report import format_table
    return format_table(head, body)
