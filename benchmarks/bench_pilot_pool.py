"""PilotPool on a real SLURM cluster: what elasticity saves, and walltime chaining.

    python benchmarks/bench_pilot_pool.py fanout [--wide 2000 --wide-s 1 --narrow 10 --narrow-s 30]
    python benchmarks/bench_pilot_pool.py chain [--runtime 3 --tasks 240 --task-s 8]

``fanout`` runs the same campaign twice in one go: a fan-out of ``--wide`` short tasks, then
``--narrow`` long aggregations that need all of them; once on a fixed pool (``--pilots``
pilots from start to end) and once elastic (one pilot at first, up to ``--pilots``, idle
pilots ended). It prints node-hours held and used for each and the ratios. ``chain`` runs a
campaign several times longer than one pilot's walltime on 1-node pilots, one at a time, and
checks that every task ran to its end exactly once.

Needs the SLURM test cluster (``scripts/slurm/up.sh --nodes 3 --cpus-per-node 2``) and RP.
Run it alone: it is timing-sensitive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from asyncflow_hpc import PilotPool, WorkflowEngine


async def campaign(pool: PilotPool, folder: Path, groups: list[tuple[int, float]]) -> dict:
    """Stages of (count, seconds) tasks, each stage after the whole previous one."""
    marks = folder / "marks"
    t0 = time.time()
    decisions: list[str] = []
    async with WorkflowEngine.create(backend=pool, work_dir=folder / "engine") as flow:
        flow.subscribe_notes(lambda kind, a: decisions.append(
            f"{time.time() - t0:7.1f} {a.get('action', kind)} {a.get('pilot', '')} "
            f"{a.get('reason', '')}") if kind == "PilotDecision" else None)

        @flow.executable_task
        def work(stage: int, i: int, seconds: float, *after: str):
            return ["bash", "-c", f"sleep {seconds}; echo {stage}-{i} >> {marks}"]

        previous: list = []
        for stage, (count, seconds) in enumerate(groups):
            # each task of a stage takes all of the previous stage's results as inputs
            previous = [work(stage, i, seconds, *previous) if stage else work(stage, i, seconds)
                        for i in range(count)]
            await asyncio.gather(*previous)
        elapsed = time.time() - t0
        counts = dict(flow.counts)
    costs = pool.costs()
    done = marks.read_text().split()
    return {"elapsed_s": round(elapsed, 1), "counts": counts, "costs": costs,
            "marks": len(done), "unique_marks": len(set(done)), "decisions": decisions}


def show(label: str, r: dict) -> None:
    c = r["costs"]
    print(f"\n== {label}: {r['elapsed_s']:.0f} s, tasks {r['counts']}, marks {r['marks']} "
          f"({r['unique_marks']} distinct)")
    for line in r["decisions"]:
        print("   " + line)
    print(f"   {'pilot':8} {'nodes':>5} {'done':>5} {'moved':>5} {'held h':>8} {'used h':>8} "
          f"{'util':>6}  end")
    for p in c["pilots"]:
        util = f"{p['utilisation']:.0%}" if p["utilisation"] is not None else "-"
        print(f"   {p['pilot']:8} {p['nodes']:5g} {p['done']:5d} {p['moved']:5d} "
              f"{p['held_node_hours']:8.4f} {p['used_node_hours']:8.4f} {util:>6}  "
              f"{p['end_reason']}")
    ratio = c["held_node_hours"] / c["used_node_hours"] if c["used_node_hours"] else float("nan")
    print(f"   node-hours held {c['held_node_hours']:.4f}, used {c['used_node_hours']:.4f}: "
          f"held/used = {ratio:.3f}")


def pool_for(args: argparse.Namespace, folder: Path, elastic: bool) -> PilotPool:
    t = {"name": "cpu", "site": args.site, "nodes": 1, "runtime": args.runtime,
         "max_pilots": args.pilots, "min_pilots": 1 if elastic else args.pilots}
    return PilotPool([t], work_dir=folder / "work", scale_out_after=args.scale_out_after,
                     idle_timeout=args.idle_timeout if elastic else 1e9)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["fanout", "chain"])
    ap.add_argument("--site", default="local-slurm")
    ap.add_argument("--pilots", type=int, default=3, help="max pilots (fixed: all of them)")
    ap.add_argument("--wide", type=int, default=2000)
    ap.add_argument("--wide-s", type=float, default=1.0)
    ap.add_argument("--narrow", type=int, default=10)
    ap.add_argument("--narrow-s", type=float, default=30.0)
    ap.add_argument("--runtime", type=int, default=None, help="pilot walltime, minutes")
    ap.add_argument("--tasks", type=int, default=240)
    ap.add_argument("--task-s", type=float, default=8.0)
    ap.add_argument("--scale-out-after", type=float, default=10.0)
    ap.add_argument("--idle-timeout", type=float, default=15.0)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    os.environ.setdefault("RADICAL_PROFILE", "FALSE")
    os.environ.setdefault("RADICAL_DEFAULT_IFACE", "lo")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-pool-", dir=os.getcwd()) as tmp:
        root = Path(tmp)
        if args.mode == "fanout":
            args.runtime = args.runtime or 60
            groups = [(args.wide, args.wide_s), (args.narrow, args.narrow_s)]
            for label, elastic in (("fixed", False), ("elastic", True)):
                folder = root / label
                folder.mkdir()
                results[label] = asyncio.run(campaign(pool_for(args, folder, elastic),
                                                      folder, groups))
                show(f"{label} ({args.pilots} pilots)" if not elastic
                     else f"elastic (1..{args.pilots} pilots)", results[label])
            f, e = results["fixed"]["costs"], results["elastic"]["costs"]
            print(f"\nheld/used: fixed {f['held_node_hours'] / f['used_node_hours']:.3f}, "
                  f"elastic {e['held_node_hours'] / e['used_node_hours']:.3f}; elastic held "
                  f"{e['held_node_hours'] / f['held_node_hours']:.3f}x the fixed pool's")
        else:
            args.runtime = args.runtime or 3
            args.pilots = 1
            folder = root / "chain"
            folder.mkdir()
            t = {"name": "cpu", "site": args.site, "nodes": 1, "runtime": args.runtime,
                 "min_pilots": 1, "max_pilots": 1}
            pool = PilotPool([t], work_dir=folder / "work", drain_margin=20)
            r = results["chain"] = asyncio.run(campaign(pool, folder,
                                                        [(args.tasks, args.task_s)]))
            show(f"chain ({args.runtime}-min pilots)", r)
            active = sum(1 for d in r["decisions"] if " PilotActive " in d)
            print(f"\n{args.tasks} tasks x {args.task_s:g} s over {active} pilots of "
                  f"{args.runtime} min: {r['elapsed_s'] / 60 / args.runtime:.1f}x one walltime; "
                  f"done {r['counts']['done']}, failed {r['counts']['failed']}, "
                  f"bodies ended {r['marks']} ({r['unique_marks']} distinct)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
