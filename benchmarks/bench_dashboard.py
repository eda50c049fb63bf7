"""Cost of the live dashboard: the same no-op campaign with and without it, and its memory.

    python benchmarks/bench_dashboard.py                   # 100,000 tasks, best of 3 each
    python benchmarks/bench_dashboard.py -n 20000 -r 1     # small (CI)
    python benchmarks/bench_dashboard.py --json out.json

Each repetition runs a fresh process: an engine on the local backend runs ``n`` no-op
``async def`` tasks (``asyncio.gather``) and shuts down. Four variants, in turn:

* plain: nothing else;
* dashboard: ``dashboard=`` while a client polls ``/api/state`` every second, as an open
  page does;
* telemetry, telemetry+dashboard: the same two with the event log written too.

The figure is the makespan (engine created to shutdown done); the issue's target is
dashboard / plain <= 1.10. Peak RSS of each run gives the dashboard's memory in the campaign
(dashboard - plain); an aggregator fed 1,000,000 tasks' events (each a TaskStarted and a
TaskCompleted line, the log mode's input) in a process of its own gives its growth there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

CAMPAIGN = textwrap.dedent('''
    import asyncio, json, os, sys, threading, time, urllib.request
    from asyncflow_hpc import WorkflowEngine

    n, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    opts = {"install_signal_handlers": False}
    if "telemetry" in mode:
        opts["telemetry"] = os.path.join(out, "ev.jsonl")
    if "dashboard" in mode:
        opts["dashboard"] = "127.0.0.1:0"
    sizes, stop = [], threading.Event()

    def page(url):  # an open page: the state once a second
        while not stop.wait(1.0):
            try:
                with urllib.request.urlopen(url.replace("/?", "/api/state?"), timeout=5) as r:
                    sizes.append(len(r.read()))
            except OSError:
                pass

    async def main():
        t0 = time.perf_counter()
        flow = await WorkflowEngine.create(**opts)
        poller = None
        if "dashboard" in mode:
            poller = threading.Thread(target=page, args=(flow.dashboard_url,), daemon=True)
            poller.start()

        @flow.function_task
        async def noop():
            return None

        await asyncio.gather(*[noop() for _ in range(n)])
        await flow.shutdown()
        seconds = time.perf_counter() - t0
        stop.set()
        import resource
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"mode": mode, "seconds": seconds, "payload_max": max(sizes or [0]),
                          "polls": len(sizes), "peak_rss_mb": rss}))

    asyncio.run(main())
''')

MILLION = textwrap.dedent('''
    import json, resource, sys
    from asyncflow_hpc.dashboard.aggregate import Aggregator
    n = int(sys.argv[1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    agg = Aggregator()
    head = '{"event_id":"%032x","event_type":"%s","event_time":%.6f,"emit_time":0,'
    body = ('"session_id":"s","backend":"local","task_id":"task.%07d","node_id":"node%d",'
            '"attributes":{"task_type":"function","task_name":"fn%d","workflow_id":"wf%d"}')
    t = 1.8e9
    for i in range(n):
        agg.feed(head % (2 * i, "TaskStarted", t) + body % (i, i % 8, i % 20, i % 5)
                 + ',"section":"event"}')
        t += 0.001
        agg.feed(head % (2 * i + 1, "TaskCompleted", t) + body % (i, i % 8, i % 20, i % 5)
                 + ',"duration_seconds":0.001,"section":"event"}')
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    snap = json.dumps(agg.snapshot(t))
    print(json.dumps({"tasks": n, "rss_growth_mb": (after - before) / 1024,
                      "payload_bytes": len(snap), "done": sum(f[1] for f in agg.snapshot(t)["functions"])}))
''')


MODES = ("plain", "dashboard", "telemetry", "telemetry+dashboard")


def run(code: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--tasks", type=int, default=100_000)
    parser.add_argument("-r", "--repeat", type=int, default=3)
    parser.add_argument("--million", type=int, default=1_000_000,
                        help="tasks fed to the aggregator for the memory figure (0: skip)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    env_keys = [k for k in os.environ if k.startswith("ASYNCFLOW_HPC_")]
    for k in env_keys:
        del os.environ[k]
    best: dict[str, dict] = {}
    every: dict[str, list[float]] = {m: [] for m in MODES}
    print(f"bench_dashboard: {args.tasks:,} no-op tasks, best of {args.repeat}, "
          f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    for rep in range(args.repeat):
        for mode in MODES:
            with tempfile.TemporaryDirectory() as out:
                r = run(CAMPAIGN, str(args.tasks), mode, out)
            print(f"  run {rep + 1} {mode:<20} {r['seconds']:7.3f} s  peak RSS "
                  f"{r['peak_rss_mb']:6.1f} MB"
                  + (f"  ({r['polls']} page polls, largest state {r['payload_max']:,} B)"
                     if "dashboard" in mode else ""))
            every[mode].append(r["seconds"])
            if mode not in best or r["seconds"] < best[mode]["seconds"]:
                best[mode] = r
    sec = {m: best[m]["seconds"] for m in MODES}
    print("best: " + ", ".join(f"{m} {sec[m]:.3f} s" for m in MODES))
    med = {m: statistics.median(v) for m, v in every.items()}
    print(f"dashboard / plain: {sec['dashboard'] / sec['plain']:.3f} on the best runs, "
          f"{med['dashboard'] / med['plain']:.3f} on the medians (target <= 1.10)")
    print(f"telemetry+dashboard / telemetry: "
          f"{sec['telemetry+dashboard'] / sec['telemetry']:.3f}")
    grown = best["dashboard"]["peak_rss_mb"] - best["plain"]["peak_rss_mb"]
    print(f"dashboard memory in the campaign (peak RSS, dashboard - plain): {grown:.1f} MB; "
          f"largest /api/state: {best['dashboard']['payload_max']:,} B (target <= 200 kB)")
    doc = {"tasks": args.tasks, "best": best, "all": every,
           "ratio_plain": sec["dashboard"] / sec["plain"],
           "ratio_telemetry": sec["telemetry+dashboard"] / sec["telemetry"]}
    if args.million:
        m = run(MILLION, str(args.million))
        print(f"aggregator fed {m['tasks']:,} tasks: RSS growth {m['rss_growth_mb']:.1f} MB "
              f"(target <= 50 MB), state {m['payload_bytes']:,} B, done counted {m['done']:,}")
        doc["million"] = m
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)


if __name__ == "__main__":
    main()
