"""Engine overhead against plain asyncio, measured in the same run.

    python benchmarks/bench_engine.py            # full sizes (about a minute on 2 cores)
    python benchmarks/bench_engine.py --quick    # small sizes, for a smoke test
    python benchmarks/bench_engine.py --json out.json

Each workload runs the same work twice: through asyncflow-hpc's engine with the local
backend in inline mode (``inline=True``: ``async def`` bodies on the engine's loop, the opt-in
fast path; ``--default`` for the default mode, bodies in the executor's workers), and with
plain ``asyncio`` (``gather`` / ``create_subprocess_exec``). Times are the
best of ``--repeat`` runs; the ratio is engine / plain (lower is better). If radical.asyncflow
is importable, its time for the small workloads is printed too.

The workloads themselves live in ``asyncflow_hpc.bench.workloads`` and are shared with
``asyncflow-hpc bench`` (which adds a table of throughput, overhead, utilisation and a
three-way comparison with radical.asyncflow: ``asyncflow-hpc bench --compare``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine
from asyncflow_hpc.bench.baselines import open_reference, plain_asyncio, reference_available
from asyncflow_hpc.bench.runner import Measurement, measure
from asyncflow_hpc.bench.workloads import Workload, make_workload


def _row(rows: list[dict], eng: Measurement, base: Measurement, **extra: object) -> None:
    for m in (eng, base):
        if not m.ok:
            raise SystemExit(f"{m.label} failed on {m.engine}: {m.error}")
    e, b = eng.makespan_s, base.makespan_s
    assert e is not None and b is not None
    rows.append({"workload": eng.label, "engine_s": e, "asyncio_s": b,
                 "ratio": e / b if b else float("nan"), **extra})
    print(f"{eng.label:<34} engine {e * 1e3:9.1f} ms   asyncio {b * 1e3:9.1f} ms"
          f"   ratio {e / b:5.2f}"
          + "".join(f"   {k} {v}" for k, v in extra.items()), flush=True)


async def engine_workloads(flow: WorkflowEngine, args: argparse.Namespace) -> list[dict]:
    rows: list[dict] = []
    r = args.repeat

    async def pair(w: Workload) -> tuple[Measurement, Measurement]:
        return (await measure(flow, w, r, backend="local"), await plain_asyncio(w, r))

    for n in args.sizes:
        e, b = await pair(make_workload("noop", n))
        _row(rows, e, b, tasks_per_s=f"{n / e.makespan_s:,.0f}" if e.ok else "-")
    e, b = await pair(make_workload("chain", args.chain))
    _row(rows, e, b, us_per_hop=f"{e.makespan_s / args.chain * 1e6:.1f}" if e.ok else "-")
    for name, size in (("fanout", args.fan), ("seed", args.workflows),
                       ("true", args.executables)):
        _row(rows, *await pair(make_workload(name, size)))
    _row(rows, *await pair(make_workload("sleep", args.sleeps, duration=0.05)))
    return rows


async def memory_after_dropped(flow: WorkflowEngine, n: int) -> dict:
    """RSS growth after ``n`` finished tasks whose futures the user dropped."""

    @flow.function_task
    async def noop() -> None:
        return None

    proc = psutil.Process()
    for _ in range(2):  # warm up allocator pools
        await asyncio.gather(*[noop() for _ in range(10_000)])
    gc.collect()
    before = proc.memory_info().rss
    batch = 10_000
    for _ in range(n // batch):
        await asyncio.gather(*[noop() for _ in range(batch)])
    # asyncio keeps the last finished gather (and so its futures) until the task's next step
    await asyncio.sleep(0)
    gc.collect()
    after = proc.memory_info().rss
    growth = (after - before) / 2**20
    print(f"memory: {n:,} finished tasks, futures dropped -> RSS growth {growth:.1f} MB "
          f"(records still reachable: {len(flow.components)})", flush=True)
    return {"workload": f"memory x{n}", "rss_growth_mb": growth}


async def reference_workloads(args: argparse.Namespace) -> list[dict]:
    if not reference_available():
        print("radical.asyncflow not installed: reference comparison skipped", flush=True)
        return []
    n = 1000
    with tempfile.TemporaryDirectory(prefix="asyncflow-hpc-reference-") as work_dir:
        flow, _startup = await open_reference(work_dir)
        try:
            m = await measure(flow, make_workload("noop", n), 1, backend="local",
                              engine="radical.asyncflow")
        finally:
            await flow.shutdown()
    if not m.ok:
        print(f"radical.asyncflow noop x{n}: failed: {m.error}", flush=True)
        return []
    t = m.makespan_s or 0.0
    print(f"radical.asyncflow noop x{n}: {t * 1e3:.1f} ms", flush=True)
    return [{"workload": f"radical.asyncflow noop x{n}", "seconds": t}]


def open_engine(args: argparse.Namespace) -> Any:
    # no telemetry, progress or journal from ASYNCFLOW_HPC_* variables: the engine alone;
    # --default measures the default mode (bodies in the executor's workers) instead
    async def make() -> WorkflowEngine:
        backend = await LocalExecutionBackend(ThreadPoolExecutor())
        return await WorkflowEngine.create(backend=backend, install_signal_handlers=False,
                                           telemetry="", progress="off", journal="",
                                           inline=not args.default)
    return make()


async def main(args: argparse.Namespace) -> list[dict]:
    print(f"asyncflow-hpc engine benchmark: python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, best of {args.repeat}", flush=True)
    # memory first, on an engine of its own: its records (kept until that engine is shut
    # down) neither hide growth nor weigh on the timed workloads
    flow = await open_engine(args)
    rows = [await memory_after_dropped(flow, args.memory)]
    await flow.shutdown()
    del flow
    gc.collect()
    async with await open_engine(args) as flow:
        rows += await engine_workloads(flow, args)
    if args.reference:
        rows += await reference_workloads(args)
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    p.add_argument("--default", action="store_true",
                   help="default mode (bodies in the executor's workers), not inline")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", help="write the rows to this file")
    p.add_argument("--reference", action="store_true",
                   help="also time radical.asyncflow if installed")
    a = p.parse_args(argv)
    if a.quick:
        a.sizes, a.chain, a.fan, a.workflows, a.executables, a.sleeps, a.memory = (
            [100, 1000], 100, 100, 100, 20, 50, 20_000)
    else:
        a.sizes, a.chain, a.fan, a.workflows, a.executables, a.sleeps, a.memory = (
            [1000, 10_000, 100_000], 1000, 1000, 1000, 500, 200, 100_000)
    return a


if __name__ == "__main__":
    ns = parse()
    result = asyncio.run(main(ns))
    if ns.json:
        with open(ns.json, "w") as fh:
            json.dump(result, fh, indent=2)
