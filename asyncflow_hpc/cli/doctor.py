"""``asyncflow-hpc doctor``: what this machine offers for running campaigns on clusters.

One screen answering the first questions of every support request: which schedulers'
commands are here, which MPI launcher and mpi4py, which RADICAL-Pilot, are we inside an
allocation, and is ``ping``/``dig`` installed (RP's bootstrap would use them to reach the
internet). Every probe is bounded in time and none submits anything.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
import subprocess

import click

from ..hpc.allocation import allocation_variables, current_allocation
from ..hpc.schedulers import SCHEDULERS

__all__ = ["doctor_command", "probe"]

_TOOLS = (*(cmd for s in SCHEDULERS.values() for cmd in s.commands), "mpirun", "mpiexec")
_VERSION_FLAGS = {"sbatch": ["--version"], "srun": ["--version"], "mpirun": ["--version"],
                  "mpiexec": ["--version"]}


def _version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def _package(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def probe() -> dict[str, object]:
    """Everything ``doctor`` reports, as plain data."""
    tools: dict[str, dict[str, str]] = {}
    for tool in _TOOLS:
        path = shutil.which(tool)
        if path:
            flags = _VERSION_FLAGS.get(tool)
            tools[tool] = {"path": path, "version": _version([path, *flags]) if flags else ""}
    slurm_up = SCHEDULERS["slurm"].controller_up() if "sinfo" in tools else None
    alloc = current_allocation()
    return {
        "tools": tools,
        "slurm_controller_up": slurm_up,
        "mpi4py": _package("mpi4py") if importlib.util.find_spec("mpi4py") else None,
        "radical.pilot": _package("radical.pilot"),
        "radical.utils": _package("radical.utils"),
        "allocation": None if alloc is None else {
            "scheduler": alloc.scheduler, "job_id": alloc.job_id, "nodes": list(alloc.nodes),
            "cpus_per_node": alloc.cpus_per_node, "gpus_per_node": alloc.gpus_per_node},
        "allocation_variables": allocation_variables(),
        "network_tools": [t for t in ("ping", "dig") if shutil.which(t)],
    }


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor_command(as_json: bool) -> None:
    """Show what this machine offers: sbatch/srun/qsub, mpirun, mpi4py, RADICAL-Pilot,
    the current allocation and its variables; warn when ping or dig is installed."""
    info = probe()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    tools = info["tools"]
    assert isinstance(tools, dict)
    for tool in _TOOLS:
        found = tools.get(tool)
        detail = f"{found['path']}  {found['version']}".rstrip() if found else "not found"
        click.echo(f"{tool:<14} {detail}")
    if info["slurm_controller_up"] is not None:
        state = "up" if info["slurm_controller_up"] else "NOT answering (scontrol ping)"
        click.echo(f"{'slurmctld':<14} {state}")
    for pkg in ("mpi4py", "radical.pilot", "radical.utils"):
        click.echo(f"{pkg:<14} {info[pkg] or 'not installed'}")
    alloc = info["allocation"]
    if alloc:
        assert isinstance(alloc, dict)
        click.echo(f"{'allocation':<14} {alloc['scheduler']} job {alloc['job_id']}: "
                   f"{len(alloc['nodes'])} node(s) {','.join(alloc['nodes'])}, "
                   f"{alloc['cpus_per_node'] or '?'} cpus/node, {alloc['gpus_per_node']} gpus/node")
    else:
        click.echo(f"{'allocation':<14} none (not inside a SLURM/PBS job)")
    variables = info["allocation_variables"]
    assert isinstance(variables, dict)
    for key, value in variables.items():
        click.echo(f"  {key}={value}")
    network = info["network_tools"]
    if network:
        click.echo(f"WARNING: {' and '.join(network)} installed: RADICAL-Pilot's bootstrap uses them "  # type: ignore[arg-type]
                   "to contact public NTP/ping hosts; remove them on air-gapped or loopback-only "
                   "machines (apt-get purge iputils-ping dnsutils bind9-dnsutils)", err=True)
    else:
        click.echo(f"{'ping/dig':<14} not installed (good: RP's bootstrap sends nothing out)")
