"""``python -m asyncflow_hpc.bench worker ...``: one node's part of a scaling point.

Batch jobs call this module rather than the ``asyncflow-hpc`` console script, so a point
runs with exactly the interpreter and package that submitted it (the job script sets
``PYTHONPATH``), whatever is first on the compute node's ``PATH``.
"""

from __future__ import annotations

import argparse
import sys

from .scaling import run_worker


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asyncflow_hpc.bench")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run one node's share of a scaling point")
    w.add_argument("--workload", required=True)
    w.add_argument("--size", type=int, required=True)
    w.add_argument("--mode", choices=["weak", "strong"], default="weak")
    w.add_argument("--duration", type=float, default=None)
    w.add_argument("--ranks", type=int, default=2)
    w.add_argument("--backend", default="local")
    w.add_argument("--repeat", type=int, default=1)
    w.add_argument("--slots", type=int, default=None)
    w.add_argument("--nodes", type=int, default=None)
    w.add_argument("--json", required=True, help="output file; {rank} becomes SLURM_PROCID")
    a = p.parse_args(argv)
    result = run_worker(a.workload, a.size, a.mode, duration=a.duration, ranks=a.ranks,
                        backend=a.backend, repeat=a.repeat, slots=a.slots, json_out=a.json,
                        nodes=a.nodes)
    m = result["measurement"]
    print(f"rank {result['rank']} on {result['host']}: {m['label']}: "
          f"{m.get('makespan_s')} s, error={m.get('error')}", flush=True)
    return 0 if m.get("error") is None else 1


if __name__ == "__main__":
    sys.exit(main())
