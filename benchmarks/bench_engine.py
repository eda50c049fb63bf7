"""Engine overhead against plain asyncio, measured in the same run.

    python benchmarks/bench_engine.py            # full sizes (about a minute on 2 cores)
    python benchmarks/bench_engine.py --quick    # small sizes, for a smoke test
    python benchmarks/bench_engine.py --json out.json

Each workload runs the same work twice: through asyncflow-hpc's engine with the local
backend, and with plain ``asyncio`` (``gather`` / ``create_subprocess_exec``). Times are the
best of ``--repeat`` runs; the ratio is engine / plain (lower is better). If radical.asyncflow
is importable, its time for the small workloads is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import psutil

from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine


async def _noop(x: int = 0) -> int:
    return x + 1


async def best_of(repeat: int, fn: Callable[[], Awaitable[object]]) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        await fn()
        best = min(best, time.perf_counter() - t0)
    return best


async def engine_workloads(flow: WorkflowEngine, args: argparse.Namespace) -> list[dict]:
    @flow.function_task
    async def noop(x: int = 0) -> int:
        return x + 1

    @flow.function_task
    async def join(*xs: int) -> int:
        return sum(xs)

    @flow.function_task
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return seconds

    @flow.executable_task
    async def true_exe() -> str:
        return "/bin/true"

    rows: list[dict] = []
    r = args.repeat

    def row(name: str, engine_s: float, base_s: float, **extra: object) -> None:
        rows.append({"workload": name, "engine_s": engine_s, "asyncio_s": base_s,
                     "ratio": engine_s / base_s if base_s else float("nan"), **extra})
        print(f"{name:<34} engine {engine_s * 1e3:9.1f} ms   asyncio {base_s * 1e3:9.1f} ms"
              f"   ratio {engine_s / base_s:5.2f}"
              + "".join(f"   {k} {v}" for k, v in extra.items()), flush=True)

    for n in args.sizes:
        e = await best_of(r, lambda n=n: asyncio.gather(*[noop() for _ in range(n)]))
        b = await best_of(r, lambda n=n: asyncio.gather(*[_noop() for _ in range(n)]))
        row(f"noop x{n}", e, b, tasks_per_s=f"{n / e:,.0f}")

    hops = args.chain

    async def engine_chain() -> None:
        f = noop(0)
        for _ in range(hops - 1):
            f = noop(f)
        assert await f == hops

    async def plain_chain() -> None:
        # the asyncio equivalent of a dependency chain: each step a task awaiting the last
        async def step(prev: asyncio.Task | None) -> int:
            return (await prev if prev is not None else 0) + 1

        t: asyncio.Task | None = None
        for _ in range(hops):
            t = asyncio.ensure_future(step(t))
        assert await t == hops  # type: ignore[misc]

    e = await best_of(r, engine_chain)
    b = await best_of(r, plain_chain)
    row(f"chain x{hops}", e, b, us_per_hop=f"{e / hops * 1e6:.1f}")

    width = args.fan

    async def engine_fan() -> None:
        root = noop(0)
        assert await join(*[noop(root) for _ in range(width)]) == 2 * width

    async def plain_fan() -> None:
        root = await _noop(0)
        xs = await asyncio.gather(*[_noop(root) for _ in range(width)])
        assert await _noop(sum(xs) - 1) == 2 * width

    row(f"fan-out/fan-in x{width}", await best_of(r, engine_fan), await best_of(r, plain_fan))

    nwf = args.workflows

    async def engine_seed() -> None:
        async def wf(i: int) -> int:
            t1 = noop(i)
            t2 = noop(t1)
            t3 = join(t1, t2)
            return await t3

        await asyncio.gather(*[wf(i) for i in range(nwf)])

    async def plain_seed() -> None:
        async def wf(i: int) -> int:
            t1 = await _noop(i)
            t2 = await _noop(t1)
            return t1 + t2

        await asyncio.gather(*[wf(i) for i in range(nwf)])

    row(f"seed-shaped workflows x{nwf}", await best_of(r, engine_seed),
        await best_of(r, plain_seed))

    nexe = args.executables

    async def plain_exe() -> None:
        async def one() -> bytes:
            p = await asyncio.create_subprocess_exec(
                "/bin/true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, _ = await p.communicate()
            return out

        await asyncio.gather(*[one() for _ in range(nexe)])

    e = await best_of(r, lambda: asyncio.gather(*[true_exe() for _ in range(nexe)]))
    b = await best_of(r, plain_exe)
    row(f"/bin/true executables x{nexe}", e, b)

    nsleep = args.sleeps
    e = await best_of(r, lambda: asyncio.gather(*[nap(0.05) for _ in range(nsleep)]))
    b = await best_of(r, lambda: asyncio.gather(*[asyncio.sleep(0.05) for _ in range(nsleep)]))
    row(f"sleep(0.05) x{nsleep}", e, b)
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
    gc.collect()
    after = proc.memory_info().rss
    growth = (after - before) / 2**20
    print(f"memory: {n:,} finished tasks, futures dropped -> RSS growth {growth:.1f} MB "
          f"(records still reachable: {len(flow.components)})", flush=True)
    return {"workload": f"memory x{n}", "rss_growth_mb": growth}


async def reference_workloads(args: argparse.Namespace) -> list[dict]:
    try:
        from radical.asyncflow import LocalExecutionBackend as RefBackend
        from radical.asyncflow import WorkflowEngine as RefEngine
    except ImportError:
        print("radical.asyncflow not installed: reference comparison skipped", flush=True)
        return []
    backend = await RefBackend(ThreadPoolExecutor())
    flow = await RefEngine.create(backend=backend)

    @flow.function_task
    async def noop(x: int = 0) -> int:
        return x + 1

    rows = []
    n = 1000
    t = await best_of(1, lambda: asyncio.gather(*[noop() for _ in range(n)]))
    rows.append({"workload": f"radical.asyncflow noop x{n}", "seconds": t})
    print(f"radical.asyncflow noop x{n}: {t * 1e3:.1f} ms", flush=True)
    await flow.shutdown()
    return rows


async def main(args: argparse.Namespace) -> list[dict]:
    backend = await LocalExecutionBackend(ThreadPoolExecutor())
    async with WorkflowEngine.create(backend=backend, install_signal_handlers=False) as flow:
        print(f"asyncflow-hpc engine benchmark: python {sys.version.split()[0]}, "
              f"{os.cpu_count()} cores, best of {args.repeat}", flush=True)
        # memory first, so that earlier workloads' freed memory does not hide growth
        rows = [await memory_after_dropped(flow, args.memory)]
        rows += await engine_workloads(flow, args)
    if args.reference:
        rows += await reference_workloads(args)
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
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
