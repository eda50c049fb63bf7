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


def _line(ok: bool | None, what: str, meaning: str) -> str:
    mark = {True: "ok  ", False: "--  ", None: "??  "}[ok]
    return f"  {mark}{what}\n        {meaning}"


def explain(info: dict[str, object]) -> list[str]:
    """The findings as a user reads them: what was found, then what it means for a campaign."""
    tools = info["tools"]
    assert isinstance(tools, dict)
    out = ["Batch schedulers (submit a campaign as a job, or a pilot from this login node)"]
    for name, sched in SCHEDULERS.items():
        have = [c for c in sched.commands if c in tools]
        version = next((tools[c]["version"] for c in have if tools[c]["version"]), "")
        if not have:
            out.append(_line(False, f"{name.upper()}: no {', '.join(sched.commands)} here",
                             f"sites with scheduler = \"{name}\" cannot be used from this machine"))
            continue
        missing = [c for c in sched.commands if c not in tools]
        found = f"{', '.join(have)}{f' ({version})' if version else ''}"
        meaning = (f"'asyncflow-hpc submit --site S' and 'run --site S' work for {name} sites"
                   if not missing else f"missing {', '.join(missing)}: jobs may be submitted "
                   "but not watched or cancelled")
        if name == "slurm" and info["slurm_controller_up"] is False:
            meaning = "the controller does not answer (scontrol ping): jobs cannot be queued now"
        out.append(_line(not missing, f"{name.upper()}: {found}", meaning))
    out.append("MPI (tasks with task_description={'ranks': N})")
    launcher = next((t for t in ("mpirun", "mpiexec") if t in tools), None)
    if launcher:
        out.append(_line(True, f"{launcher}: {tools[launcher]['path']} "
                               f"{tools[launcher]['version']}".rstrip(),
                         "the local backend starts MPI tasks with it; on a pilot the site's "
                         "launcher does"))
    else:
        out.append(_line(False, "no mpirun or mpiexec",
                         "MPI tasks fail on the local backend (ExecutableNotFoundError)"))
    mpi4py = info["mpi4py"]
    out.append(_line(bool(mpi4py), f"mpi4py {mpi4py or 'not installed'}",
                     "Python bodies can use MPI.COMM_WORLD" if mpi4py else
                     "Python MPI bodies need it: pip install mpi4py"))
    out.append("RADICAL-Pilot (--backend radical, --site: pilots and warm worker pools)")
    rp = info["radical.pilot"]
    out.append(_line(bool(rp), f"radical.pilot {rp or 'not installed'}, radical.utils "
                               f"{info['radical.utils'] or 'not installed'}",
                     "pilots can start from here" if rp else
                     "only the local and dry-run backends: pip install 'asyncflow-hpc[radical]'"))
    out.append("This shell")
    alloc = info["allocation"]
    if alloc:
        assert isinstance(alloc, dict)
        out.append(_line(True, f"inside {alloc['scheduler']} job {alloc['job_id']}: "
                               f"{len(alloc['nodes'])} node(s) {','.join(alloc['nodes'])}, "
                               f"{alloc['cpus_per_node'] or '?'} cpus/node, "
                               f"{alloc['gpus_per_node']} gpus/node",
                         "'run --in-allocation' starts the pilot on these nodes, no second job"))
        variables = info["allocation_variables"]
        assert isinstance(variables, dict)
        out += [f"        {key}={value}" for key, value in variables.items()]
    else:
        out.append(_line(None, "not inside a batch job",
                         "'run --in-allocation' needs one (use submit); login-node mode and the "
                         "local backend do not"))
    network = info["network_tools"]
    assert isinstance(network, list)
    out.append("Network")
    out.append(_line(not network, "ping/dig " + ("installed: " + ", ".join(network) if network
                                                 else "not installed"),
                     "RADICAL-Pilot's bootstrap would contact public hosts with them: remove "
                     "them on loopback-only machines" if network else
                     "good: RADICAL-Pilot's bootstrap sends nothing off this machine"))
    return out


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor_command(as_json: bool) -> None:
    """Check what this machine offers for campaigns, and say what each finding means: batch
    schedulers, MPI, RADICAL-Pilot, the current allocation, ping/dig. Submits nothing."""
    info = probe()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo("\n".join(explain(info)))
    if info["network_tools"]:
        click.echo("WARNING: ping/dig installed: RADICAL-Pilot's bootstrap uses them to contact "
                   "public hosts (apt-get purge iputils-ping dnsutils bind9-dnsutils)", err=True)
