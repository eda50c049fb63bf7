"""asyncflow-hpc on RADICAL-Pilot against raw RADICAL-Pilot, same session, same pilot.

    python benchmarks/bench_radical.py                  # 500 tasks, one round (~3 min, 2 cores)
    python benchmarks/bench_radical.py --tasks 100      # quicker
    python benchmarks/bench_radical.py --rounds 2 --json out.json
    python benchmarks/bench_radical.py --client thread  # RP's client in this process

One pilot on ``local.localhost`` (``--resource`` for another) runs, in turn:

* raw RP: ``tmgr.submit_tasks`` with N ``/bin/true`` descriptions, then ``tmgr.wait_tasks``
  (in a thread, as a plain RP script would);
* asyncflow-hpc: N ``@flow.executable_task`` calls returning ``/bin/true``, awaited with
  ``asyncio.gather`` on the engine's event loop.

Both go through the backend's own task manager, so the pilot, the agent and the
client-side components are the same. ``--client process`` (the backend's default) runs RP's
client in a child process; raw RP then runs there too (``backend.run_in_client``), so both
sides always share one task manager. Reported:

* throughput of each and the ratio asyncflow-hpc / raw (target >= 0.95);
* the delay from RP's final-state callback (on RP's listener thread, in whichever process
  runs RP's client; ``perf_counter`` is the system's monotonic clock, the same in both) to
  the awaiting coroutine running again (target: median < 5 ms; radical.asyncflow lags up to
  ~1 s);
* the longest event-loop stall, i.e. the longest overshoot of a 1 ms ``asyncio.sleep``,
  during start-up (session, pilot until active) and during the asyncflow-hpc run
  (target < 50 ms).

``--rounds R`` alternates raw and asyncflow-hpc R times (the pilot warms up and the machine's
load drifts; alternating spreads both over the two). The summary pools all rounds (total
tasks / total time of each side) and lists the ratio of every round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RADICAL_PROFILE", "FALSE")
os.environ.setdefault("RADICAL_DEFAULT_IFACE", "lo")

from asyncflow_hpc import WorkflowEngine  # noqa: E402
from asyncflow_hpc.backends.radical import RadicalPilotBackend  # noqa: E402
from asyncflow_hpc.backends.radical.inprocess import InProcessClient  # noqa: E402

FINAL = ("DONE", "FAILED", "CANCELED")


def install_stamps(client: InProcessClient) -> None:
    """Record when RP delivers each task's final state (runs where RP's client runs)."""
    client.bench_final_at = final_at = {}

    def stamp(task: Any, state: str) -> None:
        if state in ("DONE", "FAILED", "CANCELED"):
            final_at[task.uid] = time.perf_counter()

    client.tmgr.register_callback(stamp)


def final_times(client: InProcessClient, spec_uids: list[str]) -> list[float | None]:
    """The recorded final-state moments of the RP tasks behind ``spec_uids``."""
    out = []
    for uid in spec_uids:
        rp_uid = client.rp_uid(uid)
        out.append(client.bench_final_at.get(rp_uid) if rp_uid else None)
    return out


class LoopStall:
    """Longest overshoot of a 1 ms ``asyncio.sleep``: how long the loop could not run.

    On Linux it also reads the loop thread's run-queue delay (``/proc/.../schedstat``): the
    part of a stall the thread spent runnable but waiting for a CPU is the machine's load,
    not this process. ``max_own`` is the longest stall with that part taken out, i.e. time
    the loop was held up by this process (GIL, blocking calls on the loop).
    """

    def __init__(self) -> None:
        self.max = 0.0
        self.max_own = 0.0
        self.samples = 0
        self._task: asyncio.Task | None = None
        try:  # kept open: a probe a millisecond must be cheap (it runs beside raw RP too)
            self._fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat",
                               os.O_RDONLY)
        except OSError:
            self._fd = -1

    def _run_delay(self) -> float:
        if self._fd < 0:
            return 0.0
        return int(os.pread(self._fd, 128, 0).split()[1]) / 1e9

    async def _probe(self) -> None:
        while True:
            d0 = self._run_delay()
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            over = time.perf_counter() - t - 0.001
            if over > self.max_own:  # only then is the (costly) second read needed
                self.max_own = max(self.max_own, over - (self._run_delay() - d0))
            self.max = max(self.max, over)
            self.samples += 1

    def __enter__(self) -> LoopStall:
        self._task = asyncio.get_running_loop().create_task(self._probe())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def raw_rp(client: InProcessClient, n: int, tag: str) -> float:
    """N /bin/true through the backend's task manager, as a plain RP script does it."""
    rp = client.rp
    tmgr = client.tmgr
    t0 = time.perf_counter()  # building the descriptions is part of a raw RP script's work
    tds = [rp.TaskDescription({"uid": f"raw.{tag}.{i:06d}", "executable": "/bin/true"})
           for i in range(n)]
    tasks = tmgr.submit_tasks(tds)
    tmgr.wait_tasks([t.uid for t in tasks])
    took = time.perf_counter() - t0
    bad = [t.uid for t in tasks if t.state != rp.DONE]
    if bad:
        raise SystemExit(f"raw RP: {len(bad)} task(s) did not end DONE, e.g. {bad[:3]}")
    return took


async def asyncflow_run(flow: WorkflowEngine, backend: RadicalPilotBackend, n: int) -> dict:
    @flow.executable_task
    def true() -> str:
        return "/bin/true"

    async def one() -> tuple[str, float]:
        fut = true()
        if await fut != "":
            raise SystemExit(f"task {fut.uid} printed something")
        return fut.uid, time.perf_counter()

    with LoopStall() as stall:
        t0 = time.perf_counter()
        resumed = await asyncio.gather(*(one() for _ in range(n)))
        took = time.perf_counter() - t0
    finals = await backend.run_in_client(final_times, [uid for uid, _ in resumed])
    pairs = zip(resumed, finals, strict=True)
    delays = [t_res - t_fin for (_, t_res), t_fin in pairs if t_fin is not None]
    return {"seconds": took, "stall_s": stall.max, "stall_own_s": stall.max_own,
            "delays": delays}


async def main(args: argparse.Namespace) -> dict:
    pilot = {"resource": args.resource, "cores": args.cores, "runtime": args.runtime}
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-radical-")).absolute()
    backend = RadicalPilotBackend(pilot, work_dir=work_dir, nice=args.nice, client=args.client)
    result: dict[str, Any] = {"tasks": args.tasks, "pilot": pilot, "rounds": [],
                              "cpu_count": os.cpu_count(), "client": backend.client}
    print(f"pilot {pilot} on a {os.cpu_count()}-core machine (load average "
          f"{os.getloadavg()[0]:.1f}); RP client: {backend.client}; work dir {work_dir}",
          flush=True)
    if args.noise:
        with LoopStall() as idle:
            await asyncio.sleep(args.noise)
        result.update(idle_stall_s=idle.max, idle_stall_own_s=idle.max_own)
        print(f"idle loop, nothing running, {args.noise:.0f}s: longest stall "
              f"{idle.max * 1e3:.1f} ms ({idle.max_own * 1e3:.1f} ms net of CPU wait): "
              "the machine's own noise", flush=True)
    with LoopStall() as stall:
        t0 = time.perf_counter()
        await backend.start()
        t_started = time.perf_counter() - t0
        await backend.wait_active(600)
        t_active = time.perf_counter() - t0
    result.update(startup_stall_s=stall.max, startup_stall_own_s=stall.max_own,
                  start_s=t_started, active_s=t_active)
    print(f"start-up: backend started in {t_started:.1f}s, pilot active after {t_active:.1f}s; "
          f"longest loop stall {stall.max * 1e3:.1f} ms ({stall.max_own * 1e3:.1f} ms net of "
          f"CPU wait; {stall.samples} probes)", flush=True)
    await backend.run_in_client(install_stamps)
    flow = await WorkflowEngine.create(backend=backend, install_signal_handlers=False)
    try:
        # warm-up: first tasks pay for the agent's launch scripts and caches
        await backend.run_in_client(raw_rp, 20, "warm")
        await asyncflow_run(flow, backend, 20)
        for r in range(args.rounds):
            # the same probe runs while raw RP works, so that both sides pay for it alike
            with LoopStall():
                raw_s = await backend.run_in_client(raw_rp, args.tasks, f"r{r}")
            af = await asyncflow_run(flow, backend, args.tasks)
            d = sorted(af["delays"])
            row = {
                "raw_s": raw_s, "asyncflow_s": af["seconds"],
                "raw_tasks_per_s": args.tasks / raw_s,
                "asyncflow_tasks_per_s": args.tasks / af["seconds"],
                "ratio": raw_s / af["seconds"],
                "delay_median_ms": statistics.median(d) * 1e3 if d else float("nan"),
                "delay_p95_ms": d[int(0.95 * (len(d) - 1))] * 1e3 if d else float("nan"),
                "delay_max_ms": d[-1] * 1e3 if d else float("nan"),
                "delays_measured": len(d),
                "run_stall_ms": af["stall_s"] * 1e3,
                "run_stall_own_ms": af["stall_own_s"] * 1e3,
                "load_average": os.getloadavg()[0],
            }
            result["rounds"].append(row)
            print(f"round {r + 1}: raw RP {row['raw_tasks_per_s']:.1f} tasks/s "
                  f"({raw_s:.1f}s)  asyncflow-hpc {row['asyncflow_tasks_per_s']:.1f} tasks/s "
                  f"({af['seconds']:.1f}s)  ratio {row['ratio']:.3f}  callback->resume median "
                  f"{row['delay_median_ms']:.2f} ms p95 {row['delay_p95_ms']:.2f} ms max "
                  f"{row['delay_max_ms']:.2f} ms  loop stall {row['run_stall_ms']:.1f} ms "
                  f"({row['run_stall_own_ms']:.1f} net)  load {row['load_average']:.1f}",
                  flush=True)
    finally:
        t = time.perf_counter()
        await flow.shutdown()
        result["close_s"] = time.perf_counter() - t
        if not args.keep and not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    return result


def summary(res: dict) -> None:
    rounds = res["rounds"]
    raw_s = sum(r["raw_s"] for r in rounds)
    af_s = sum(r["asyncflow_s"] for r in rounds)
    pooled = raw_s / af_s
    n = res["tasks"] * len(rounds)
    worst_stall = max(r["run_stall_ms"] for r in res["rounds"])
    worst_own = max(r["run_stall_own_ms"] for r in res["rounds"])
    med = statistics.median(r["delay_median_ms"] for r in res["rounds"])

    def mark(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"\n== {res['tasks']} x /bin/true, same pilot ({res['pilot']['cores']} cores, "
          f"{res['pilot']['resource']}), {len(res['rounds'])} round(s), RP client: "
          f"{res['client']}, load average {os.getloadavg()[0]:.1f}")
    print(f"throughput ratio asyncflow-hpc / raw RP : {pooled:.3f} "
          f"(all rounds pooled; target >= 0.95: {mark(pooled >= 0.95)}); per round: "
          + ", ".join(f"{r['ratio']:.3f}" for r in rounds))
    print(f"  raw RP {n / raw_s:.1f} tasks/s, asyncflow-hpc {n / af_s:.1f} tasks/s")
    print(f"final callback -> coroutine resumed      : median {med:.2f} ms "
          f"(target < 5 ms: {mark(med < 5)})")
    su, su_own = res["startup_stall_s"] * 1e3, res["startup_stall_own_s"] * 1e3
    print(f"longest loop stall, start-up            : {su:.1f} ms "
          f"(target < 50 ms: {mark(su < 50)}); net of CPU wait {su_own:.1f} ms "
          f"({mark(su_own < 50)})")
    print(f"longest loop stall, {res['tasks']}-task run        : {worst_stall:.1f} ms "
          f"(target < 50 ms: {mark(worst_stall < 50)}); net of CPU wait {worst_own:.1f} ms "
          f"({mark(worst_own < 50)})")
    if "idle_stall_s" in res:
        print(f"  for comparison, an idle loop on this machine just before: "
              f"{res['idle_stall_s'] * 1e3:.1f} ms")
    print(f"pilot active after {res['active_s']:.1f}s; shutdown took {res['close_s']:.1f}s")


def cli() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cores", type=int, default=4, help="pilot cores (default 4)")
    ap.add_argument("--resource", default="local.localhost")
    ap.add_argument("--runtime", type=int, default=30, help="pilot runtime, minutes")
    ap.add_argument("--nice", type=int, default=10,
                    help="the backend's nice= (CPU priority of RP's thread and processes)")
    ap.add_argument("--client", choices=("process", "thread"),
                    help="where RP's client runs (default: the backend's default, or "
                         "$ASYNCFLOW_HPC_RP_CLIENT)")
    ap.add_argument("--work-dir", help="keep RP's session and sandbox here")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work dir")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--noise", type=float, default=5.0,
                    help="seconds of idle-loop probing first, the machine's noise floor (0: skip)")
    args = ap.parse_args()
    found = [t for t in ("ping", "dig") if shutil.which(t)]
    if found and args.resource.startswith("local."):
        sys.exit(f"{' and '.join(found)} on PATH: RP's bootstrap would contact public "
                 "addresses; refusing to start a pilot")
    res = asyncio.run(main(args))
    summary(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    cli()
