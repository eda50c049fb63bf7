"""PilotPool on a real SLURM cluster: what elasticity saves, and walltime chaining.

    python benchmarks/bench_pilot_pool.py fanout [--wide 2000 --wide-s 1 --narrow 10 --narrow-s 30]
    python benchmarks/bench_pilot_pool.py chain [--runtime 3 --tasks 100 --task-s 8]

The same as ``asyncflow-hpc bench pool ...`` (see ``asyncflow_hpc/bench/pool.py``): ``fanout``
runs a fan-out of short tasks then a few long aggregations on a fixed pool and on an elastic
one in the same run and prints node-hours held and used of each; ``chain`` runs a campaign
several walltimes long on a chain of 1-node pilots. Needs the SLURM test cluster
(``scripts/slurm/up.sh --nodes 3 --cpus-per-node 2``) and RADICAL-Pilot; run it alone.
"""

from __future__ import annotations

import os
import sys

from asyncflow_hpc.cli.bench import bench_command

if __name__ == "__main__":
    os.environ.setdefault("RADICAL_PROFILE", "FALSE")
    os.environ.setdefault("RADICAL_DEFAULT_IFACE", "lo")
    sys.exit(bench_command.main(["pool", *sys.argv[1:]], prog_name="bench_pilot_pool.py"))
