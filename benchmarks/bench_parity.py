"""Where task bodies run, and what it costs: the numbers behind docs/concepts.md#where-bodies-run.

Each line compares asyncflow-hpc with a baseline measured in the same run:

* seed-blocking: five workflows ``task3(task1(), task2())`` whose ``async def`` bodies block in
  ``time.sleep(d)``, against the ideal (levels x d x waves) and radical.asyncflow 0.6 when it
  is installed (``pip install 'asyncflow-hpc[baseline]'``), same ThreadPoolExecutor size.
* 200 bodies awaiting ``asyncio.sleep(0.05)`` on the default executor (target < 0.2 s).
* default mode, N no-op ``async def`` tasks, against the floor of plain
  ``loop.run_in_executor(pool, f)`` for the same count (target <= 2x).
* inline mode (``inline=True``): no-op tasks against plain asyncio (target <= 3x), and the
  cost of one dependency hop in a chain (target <= 100 us).
* memory retained per finished task, futures dropped, with components kept (target <= 300 B)
  and with ``keep_components=False`` (target < 20 MB per 1M tasks); each in a fresh process.

    python benchmarks/bench_parity.py            # full size (1M tasks for memory: ~1 min)
    python benchmarks/bench_parity.py --small    # a quick look (CI-sized)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine

WORKERS = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default size


def best(times: list[float]) -> float:
    return min(times)


async def seed_blocking(flow, n: int, d: float) -> float:
    @flow.function_task
    async def task1():
        time.sleep(d)
        return 1

    @flow.function_task
    async def task2():
        time.sleep(d)
        return 2

    @flow.function_task
    async def task3(a, b):
        time.sleep(d)
        return a + b

    t = time.perf_counter()
    out = await asyncio.gather(*[task3(task1(), task2()) for _ in range(n)])
    elapsed = time.perf_counter() - t
    assert out == [3] * n, out
    return elapsed


async def ours_seed(n: int, d: float, repeat: int) -> float:
    backend = await LocalExecutionBackend(ThreadPoolExecutor(WORKERS))
    flow = await WorkflowEngine.create(backend=backend, install_signal_handlers=False)
    times = [await seed_blocking(flow, n, d) for _ in range(repeat)]
    await flow.shutdown()
    return best(times)


async def reference_seed(n: int, d: float) -> float | None:
    try:
        from radical.asyncflow import LocalExecutionBackend as RefBackend
        from radical.asyncflow import WorkflowEngine as RefEngine
    except ImportError:
        return None
    import logging

    logging.getLogger("radical").setLevel(logging.ERROR)
    backend = await RefBackend(ThreadPoolExecutor(WORKERS))
    flow = await RefEngine.create(backend=backend)
    try:
        return await seed_blocking(flow, n, d)
    finally:
        await flow.shutdown()


async def sleepers(n: int, repeat: int) -> float:
    flow = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(ThreadPoolExecutor()), install_signal_handlers=False)

    @flow.function_task
    async def nap():
        await asyncio.sleep(0.05)
        return 1

    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        assert sum(await asyncio.gather(*[nap() for _ in range(n)])) == n
        times.append(time.perf_counter() - t)
    await flow.shutdown()
    return best(times)


async def noop_engine(n: int, repeat: int, inline: bool) -> float:
    flow = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(ThreadPoolExecutor()), inline=inline,
        install_signal_handlers=False)

    @flow.function_task
    async def noop(x=0):
        return x

    await asyncio.gather(*[noop() for _ in range(100)])  # warm up the workers
    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        await asyncio.gather(*[noop() for _ in range(n)])
        times.append(time.perf_counter() - t)
    await flow.shutdown()
    return best(times)


async def run_in_executor_floor(n: int, repeat: int) -> float:
    loop = asyncio.get_running_loop()

    def f():
        return None

    times = []
    with ThreadPoolExecutor() as pool:
        await asyncio.gather(*[loop.run_in_executor(pool, f) for _ in range(100)])
        for _ in range(repeat):
            gc.collect()
            t = time.perf_counter()
            await asyncio.gather(*[loop.run_in_executor(pool, f) for _ in range(n)])
            times.append(time.perf_counter() - t)
    return best(times)


async def plain_asyncio(n: int, repeat: int) -> float:
    async def noop(x=0):
        return x

    times = []
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        await asyncio.gather(*[asyncio.ensure_future(noop()) for _ in range(n)])
        times.append(time.perf_counter() - t)
    return best(times)


async def chain_inline(n: int, repeat: int) -> float:
    flow = await WorkflowEngine.create(inline=True, install_signal_handlers=False)

    @flow.function_task
    async def step(x=0):
        return x + 1

    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f = step(0)
        for _ in range(n - 1):
            f = step(f)
        assert await f == n
        times.append(time.perf_counter() - t)
    await flow.shutdown()
    return best(times) / n


MEMORY_CHILD = r"""
import asyncio, gc, sys, psutil
from asyncflow_hpc import WorkflowEngine
n, keep = int(sys.argv[1]), sys.argv[2] == "1"
async def main():
    flow = await WorkflowEngine.create(keep_components=keep, inline=True,
                                       install_signal_handlers=False)
    @flow.function_task
    async def noop(x=0):
        return x
    # the first batch reaches the steady state (pools, a batch of live records): not counted
    await asyncio.gather(*[noop() for _ in range(10000)])
    gc.collect()
    before = psutil.Process().memory_info().rss
    for _ in range(n // 10000):
        await asyncio.gather(*[noop() for _ in range(10000)])  # futures dropped per batch
    gc.collect()
    grown = psutil.Process().memory_info().rss - before
    print(grown, len(flow.components))
    await flow.shutdown()
asyncio.run(main())
"""


def memory(n: int, keep: bool) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n), "1" if keep else "0"],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="small sizes (CI)")
    ap.add_argument("--repeat", "-r", type=int, default=3)
    ap.add_argument("--seed-duration", type=float, default=0.5)
    args = ap.parse_args()
    r = args.repeat
    small = args.small
    d = 0.1 if small else args.seed_duration
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"bench_parity: python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
          f"load {load:.1f}, best of {r}, {WORKERS} worker threads")

    ideal = d * (-(-10 // WORKERS)) + d * (-(-5 // WORKERS))
    ours = await ours_seed(5, d, r)
    ref = None if small else await reference_seed(5, d)
    line = (f"seed-blocking 5 workflows, {d:g} s bodies: asyncflow-hpc {ours:.3f} s, "
            f"ideal {ideal:.3f} s, ratio {ours / ideal:.3f} ({verdict(ours <= 1.1 * ideal)})")
    if ref is not None:
        line += f"; radical.asyncflow {ref:.3f} s, ratio {ours / ref:.3f} ({verdict(ours <= 1.1 * ref)})"
    print(line)

    s = await sleepers(200, r)
    print(f"200 bodies awaiting sleep(0.05), default executor: {s:.3f} s "
          f"(target < 0.2 s: {verdict(s < 0.2)})")

    n = 2000 if small else 10000
    ours_n = await noop_engine(n, r, inline=False)
    floor = await run_in_executor_floor(n, r)
    print(f"default mode, {n:,} no-op async tasks: {ours_n:.3f} s; run_in_executor floor "
          f"{floor:.3f} s; ratio {ours_n / floor:.2f} (target <= 2: {verdict(ours_n <= 2 * floor)})")

    for n in ((1000, 10000) if small else (1000, 10000, 100000)):
        ours_i = await noop_engine(n, r, inline=True)
        plain = await plain_asyncio(n, r)
        print(f"inline mode, {n:,} no-op tasks: {ours_i * 1e3:.1f} ms; plain asyncio "
              f"{plain * 1e3:.1f} ms; ratio {ours_i / plain:.2f} (target <= 3: "
              f"{verdict(ours_i <= 3 * plain)})")
    hop = await chain_inline(1000, r)
    print(f"inline mode, chain of 1,000: {hop * 1e6:.1f} us per hop (target <= 100 us: "
          f"{verdict(hop <= 100e-6)})")

    m = 100_000 if small else 1_000_000
    kept, count = memory(m, True)
    print(f"components kept, {m:,} no-op tasks, futures dropped: RSS +{kept / 1e6:.1f} MB = "
          f"{kept / m:.0f} B per finished task, {count:,} components (target <= 300 B: "
          f"{verdict(kept / m <= 300)})")
    live, count = memory(m, False)
    judged = verdict(live < 20e6) if m >= 1_000_000 else "judged at 1M tasks only"
    print(f"keep_components=False, {m:,} tasks: RSS +{live / 1e6:.1f} MB; {count:,} live "
          f"components (target < 20 MB per 1M tasks: {judged})")


if __name__ == "__main__":
    asyncio.run(main())
