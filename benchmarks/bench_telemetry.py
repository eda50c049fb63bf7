"""Cost of telemetry: the same no-op workload through the engine with telemetry off and on.

    python benchmarks/bench_telemetry.py                 # 10,000 tasks, best of 3 each
    python benchmarks/bench_telemetry.py -n 100000 --repeat 5
    python benchmarks/bench_telemetry.py --json out.json
    python benchmarks/bench_telemetry.py --writer thread   # translate and write in process

Each repetition creates an engine (local backend), runs ``n`` no-op async tasks with
``asyncio.gather`` and shuts the engine down; off and on alternate, so both see the same
machine. Two figures per mode:

* run: first submission to the last result, i.e. the engine's throughput. With telemetry on,
  this includes the hot path: the engine stamping steps on its records and keeping them on
  its tape, and the batches packed and handed to the telemetry worker process (which
  translates and writes them meanwhile, on another core). The project's target (overhead
  <= 15 % of throughput at 10,000 tasks) is about this figure.
* total: run plus shutdown, i.e. until every line is translated and on disk (the worker has
  exited): what a script that ends right after its tasks waits for.

Overheads are given on the best of the repetitions and on their medians; the loop thread's
CPU time for the run is less disturbed by other processes on a shared machine; the worker's
CPU time is what the log costs on the other core.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine


async def one_run(n: int, telemetry: str | None) -> tuple[float, float, float, float]:
    flow = await WorkflowEngine.create(
        backend=await LocalExecutionBackend(ThreadPoolExecutor(2)), telemetry=telemetry,
        progress="off", install_signal_handlers=False)

    @flow.function_task
    async def noop(x: int = 0) -> int:
        return x

    gc.collect()
    w0 = _children_cpu()
    c0 = time.thread_time()
    t0 = time.perf_counter()
    await asyncio.gather(*[noop(i) for i in range(n)])
    t1 = time.perf_counter()
    c1 = time.thread_time()
    await flow.shutdown()
    t2 = time.perf_counter()
    return t1 - t0, t2 - t0, c1 - c0, _children_cpu() - w0


def _children_cpu() -> float:
    """CPU time of finished child processes (the telemetry worker, once shut down)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


async def main(args: argparse.Namespace) -> dict:
    os.environ.pop("ASYNCFLOW_HPC_TELEMETRY", None)
    os.environ.setdefault("ASYNCFLOW_HPC_TELEMETRY_INTERVAL", "1")
    os.environ["ASYNCFLOW_HPC_TELEMETRY_WRITER"] = args.writer  # not "auto": as asked
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmp:
        await one_run(min(args.n, 1000), None)  # warm up imports and caches
        await one_run(min(args.n, 1000), os.path.join(tmp, "warm.jsonl"))
        runs: dict[str, list[tuple[float, float, float, float]]] = {"off": [], "on": []}
        lines = size = 0
        for k in range(args.repeat):
            path = os.path.join(tmp, f"events-{k}.jsonl")
            runs["off"].append(await one_run(args.n, None))
            runs["on"].append(await one_run(args.n, path))
            with open(path, "rb") as fh:
                lines = sum(1 for _ in fh)
            size = os.path.getsize(path)
            os.unlink(path)
    best = {k: (min(r[0] for r in v), min(r[1] for r in v)) for k, v in runs.items()}
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
           for k, v in runs.items()}
    cpu = {k: min(r[2] for r in v) for k, v in runs.items()}
    worker = statistics.median(r[3] for r in runs["on"])
    n = args.n
    tp_off, tp_on = n / best["off"][0], n / best["on"][0]
    overhead = (tp_off - tp_on) / tp_off * 100
    med_overhead = (1 - med["off"][0] / med["on"][0]) * 100
    cpu_overhead = (1 - cpu["off"] / cpu["on"]) * 100
    total_overhead = (best["on"][1] - best["off"][1]) / best["off"][1] * 100
    med_total_overhead = (med["on"][1] - med["off"][1]) / med["off"][1] * 100
    total_tp_overhead = (1 - best["off"][1] / best["on"][1]) * 100
    print(f"{n:,} no-op tasks, best of {args.repeat}, off and on alternating, "
          f"{args.writer} writer  "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f})")
    print(f"  telemetry off   run {best['off'][0] * 1e3:8.1f} ms  {tp_off:10,.0f} tasks/s"
          f"   total {best['off'][1] * 1e3:8.1f} ms   (medians {med['off'][0] * 1e3:.1f} / "
          f"{med['off'][1] * 1e3:.1f} ms)")
    print(f"  telemetry on    run {best['on'][0] * 1e3:8.1f} ms  {tp_on:10,.0f} tasks/s"
          f"   total {best['on'][1] * 1e3:8.1f} ms   (medians {med['on'][0] * 1e3:.1f} / "
          f"{med['on'][1] * 1e3:.1f} ms)")
    print(f"  throughput overhead of the run:  {overhead:5.1f} %   (medians: {med_overhead:.1f} %; "
          f"target <= 15 %)")
    print(f"  same, on the loop thread's CPU time (less noisy on a shared machine): "
          f"{cpu_overhead:5.1f} %   ({cpu['off'] * 1e3:.1f} ms -> {cpu['on'] * 1e3:.1f} ms)")
    print(f"  total incl. writing the log:     {total_overhead:5.1f} %   (medians: "
          f"{med_total_overhead:.1f} %; as throughput: {total_tp_overhead:.1f} %)")
    where = (f"worker process CPU {worker * 1e3:.0f} ms per run (median; on another core)"
             if args.writer == "process" else "lines made in process (no worker)")
    print(f"  log: {lines:,} lines, {size / 1e6:.1f} MB per run; {where}")
    out = {"n": n, "repeat": args.repeat, "writer": args.writer, "off": best["off"], "on": best["on"],
           "median_off": med["off"], "median_on": med["on"],
           "tasks_per_s_off": tp_off, "tasks_per_s_on": tp_on, "overhead_percent": overhead,
           "median_overhead_percent": med_overhead, "cpu_off": cpu["off"], "cpu_on": cpu["on"],
           "cpu_overhead_percent": cpu_overhead, "total_overhead_percent": total_overhead,
           "median_total_overhead_percent": med_total_overhead,
           "total_throughput_overhead_percent": total_tp_overhead, "worker_cpu": worker,
           "lines": lines, "bytes": size}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return out


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000, help="tasks per run (default 10,000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per mode; the best counts")
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--writer", choices=("process", "thread"), default="process",
                    help="where the log is translated and written: the worker process "
                         "(default) or in process (ASYNCFLOW_HPC_TELEMETRY_WRITER=thread)")
    args = ap.parse_args()
    asyncio.run(main(args))


if __name__ == "__main__":
    cli()
