"""Many small tasks through one RADICAL-Pilot pilot: asyncflow-hpc's warm pool vs Parsl HTEX.

    python benchmarks/bench_pilot_throughput.py                 # full size (~5 min, 2 cores)
    python benchmarks/bench_pilot_throughput.py --small         # CI size (~1.5 min)
    python benchmarks/bench_pilot_throughput.py --raptor 200    # + RP's raptor path, 200 tasks
    python benchmarks/bench_pilot_throughput.py --json out.json

One ``local.localhost`` pilot of ``--cores`` cores runs, in turn: 100,000 no-op function
tasks, 10,000 ``/bin/true``, 10,000 function tasks of 10 ms (makespan against the ideal
N x d / cores) and a chain of 100 dependent no-op tasks (ms per hop), with the peak RSS of the
campaign process and of RP's client process. The pilot is then shut down and Parsl's
HighThroughputExecutor runs the same workloads with as many workers as the pool had slots
(skipped when Parsl is not installed); the table gives the ratio asyncflow-hpc / Parsl.
``--raptor N`` also times N no-op function tasks through RP's own raptor path (``warm=False``),
the per-task cost the warm pool avoids.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys

os.environ.setdefault("RADICAL_PROFILE", "FALSE")
os.environ.setdefault("RADICAL_DEFAULT_IFACE", "lo")

from asyncflow_hpc.bench.pilot_compare import format_points, run_ours, run_parsl  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cores", type=int, default=2, help="pilot cores (default 2)")
    ap.add_argument("--small", action="store_true", help="CI sizes: 10k / 1k / 1k / 50")
    ap.add_argument("--raptor", type=int, default=0, metavar="N",
                    help="also N no-op tasks through RP's raptor path (warm=False)")
    ap.add_argument("--no-parsl", action="store_true", help="skip Parsl")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    sizes = (10_000, 1_000, 1_000, 50) if args.small else (100_000, 10_000, 10_000, 100)
    workloads = list(zip(("noop", "true", "sleep", "chain"), sizes, strict=True))
    pilot = {"resource": "local.localhost", "cores": args.cores, "runtime": 60}
    ours, slots = asyncio.run(run_ours(workloads, pilot=pilot))
    print(f"asyncflow-hpc: one local.localhost pilot of {args.cores} cores, warm pool of "
          f"{slots} slot(s)", flush=True)
    doc: dict = {"ours": [p.as_dict() for p in ours], "slots": slots}
    raptor = []
    if args.raptor:
        raptor, _ = asyncio.run(run_ours([("noop", args.raptor), ("true", args.raptor)],
                                         pilot=pilot, warm=False))
        doc["raptor"] = [p.as_dict() for p in raptor]
    theirs = []
    if not args.no_parsl and importlib.util.find_spec("parsl") is not None:
        theirs = run_parsl(workloads, workers=slots or args.cores)
        doc["parsl"] = [p.as_dict() for p in theirs]
    elif not args.no_parsl:
        print("(Parsl is not installed: pip install parsl)")
    print(format_points(ours, theirs))
    for p in raptor:
        print(f"RP's own path (warm=False): {p.workload} x {p.tasks}: {p.rate:.1f}/s"
              + (f" ({p.error})" if p.error else ""))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
    return 1 if any(p.error for p in ours) else 0


if __name__ == "__main__":
    sys.exit(main())
