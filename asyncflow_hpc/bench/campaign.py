"""The campaign one scaling point runs inside its batch job (rendered from the site's template).

A point's job is the site's ``batch_templates/<scheduler>/campaign.sh``, like any campaign
submitted with ``asyncflow-hpc submit``; the template runs

    python -m asyncflow_hpc run .../asyncflow_hpc/bench/campaign.py --in-allocation \\
        --backend B --site S -- --workload W --size N --mode weak --nodes 4 --json DIR/rank{rank}.json

so the allocation, the site's preparation lines and environment, the signal handling and the
``ASYNCFLOW_HPC_*`` settings are exactly a campaign's. What this script then does depends on
the backend:

* ``local`` / ``dryrun``: one engine per node. ``srun --ntasks-per-node=1`` starts
  ``python -m asyncflow_hpc.bench worker`` on every node of the allocation, each with the
  local backend on its node's cores; each writes ``rank<SLURM_PROCID>.json``.
* ``radical``: one engine, one pilot over the whole allocation (started by fork inside the
  job, from the site's in-allocation resource config), in this process; it writes
  ``rank0.json`` for all nodes' tasks.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

# run by runpy as __main__ (not as a module of the package): absolute imports only
from asyncflow_hpc.bench.scaling import PER_NODE_BACKENDS, run_worker


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="asyncflow_hpc/bench/campaign.py")
    p.add_argument("--workload", required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--mode", choices=["weak", "strong"], default="weak")
    p.add_argument("--duration", type=float, default=None)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--slots", type=int, default=None)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--json", required=True, help="output file; {rank} becomes the node's rank")
    return p.parse_args(argv)


def _cores_here(slots: int | None) -> int:
    """Cores of one node: the site's (--slots), else what SLURM gave this job on this node."""
    if slots:
        return slots
    raw = os.environ.get("SLURM_CPUS_ON_NODE", "").split("(")[0]
    return int(raw) if raw.isdigit() else (os.cpu_count() or 1)


def per_node(a: argparse.Namespace, backend: str) -> int:
    """``srun`` one worker per node; its exit status."""
    cores = _cores_here(a.slots)
    worker = [sys.executable, "-m", "asyncflow_hpc.bench", "worker",
              "--workload", a.workload, "--size", str(a.size), "--mode", a.mode,
              "--ranks", str(a.ranks), "--backend", backend, "--repeat", str(a.repeat),
              "--nodes", str(a.nodes), "--slots", str(cores), "--json", a.json]
    if a.duration is not None:
        worker += ["--duration", repr(a.duration)]
    cmd = ["srun", f"--nodes={a.nodes}", f"--ntasks={a.nodes}", "--ntasks-per-node=1",
           f"--cpus-per-task={cores}", "--kill-on-bad-exit=1", *worker]
    print("bench:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode


def one_pilot(a: argparse.Namespace) -> int:
    """All nodes' tasks through one engine on one pilot over the allocation."""
    from asyncflow_hpc.hpc.resources import radical_backend_options

    options = radical_backend_options()  # the site, in-allocation mode: set by ``run``
    if not options:
        raise SystemExit("bench campaign: --backend radical needs --site (ASYNCFLOW_HPC_SITE)")
    options.setdefault("work_dir", os.path.join(os.getcwd(), "rp"))
    tasks = a.size * a.nodes if a.mode == "weak" else a.size
    result = run_worker(a.workload, tasks, "strong", duration=a.duration, ranks=a.ranks,
                        backend="radical", repeat=a.repeat, slots=a.slots, json_out=a.json,
                        nodes=a.nodes, options=options, rank=0, count=1)
    m = result["measurement"]
    print(f"bench: {m['label']} on a {a.nodes}-node pilot: {m.get('makespan_s')} s, "
          f"error={m.get('error')}", flush=True)
    return 0 if m.get("error") is None else 1


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    backend = os.environ.get("ASYNCFLOW_HPC_BACKEND", "").strip() or "local"
    if backend in PER_NODE_BACKENDS:
        return per_node(a, backend)
    if backend == "radical":
        return one_pilot(a)
    raise SystemExit(f"bench campaign: backend {backend!r} is not supported")


if __name__ == "__main__":
    sys.exit(main())
