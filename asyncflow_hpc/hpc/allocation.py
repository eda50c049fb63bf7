"""What the SLURM or PBS allocation this process runs in offers: job id, nodes, CPUs.

Inside an allocation the pilot must ask for exactly what the batch job got — a pilot larger
than its allocation kills the RADICAL-Pilot agent — and MPI tasks should launch with the
scheduler's own launcher. Everything here comes from the environment variables the scheduler
sets, so it costs nothing and works in tests with a fake environment.

Under SLURM's Torque-style front-end (``qsub`` from slurm-wlm-torque) a job carries both
``PBS_JOBID`` and the ``SLURM_*`` variables; the real resource manager is SLURM then, and that
is what :attr:`Allocation.scheduler` reports (``pbs_job_id`` keeps the PBS id).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Allocation", "allocation_variables", "current_allocation", "expand_hostlist",
           "time_left_minutes"]


@dataclasses.dataclass(frozen=True)
class Allocation:
    """One batch allocation, as seen from inside it."""

    scheduler: str                 # "slurm" or "pbs": who manages the nodes
    job_id: str
    nodes: tuple[str, ...]
    cpus_per_node: int | None      # CPUs this job may use on each node (None: unknown)
    gpus_per_node: int = 0
    partition: str | None = None
    pbs_job_id: str | None = None  # set under PBS, and under SLURM's Torque front-end

    @property
    def total_cpus(self) -> int | None:
        return None if self.cpus_per_node is None else self.cpus_per_node * len(self.nodes)


def expand_hostlist(text: str) -> list[str]:
    """SLURM's compressed host list (``node[01-03,7],gpu1``) as a list of names."""
    out: list[str] = []
    for part in _split_top(text.strip()):
        out.extend(_expand_one(part))
    return out


def _split_top(text: str) -> list[str]:
    """Split at commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_one(name: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", name)
    if not match:
        return [name]
    head, tail = name[:match.start()], name[match.end():]
    out: list[str] = []
    for item in match.group(1).split(","):
        lo, _, hi = item.partition("-")
        if hi:
            width = len(lo)
            values = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
        else:
            values = [lo]
        for value in values:
            out.extend(_expand_one(head + value + tail))
    return out


def _int(value: str | None) -> int | None:
    if not value:
        return None
    match = re.match(r"\s*(\d+)", value)  # "2(x3),1" -> 2: the first node's count
    return int(match.group(1)) if match else None


def _gpus(env: Mapping[str, str]) -> int:
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        value = _int(env.get(key))
        if value is not None:
            return value
    visible = env.get("CUDA_VISIBLE_DEVICES") or env.get("ROCR_VISIBLE_DEVICES")
    return len([d for d in visible.split(",") if d]) if visible else 0


def current_allocation(env: Mapping[str, str] | None = None) -> Allocation | None:
    """The allocation described by ``env`` (default: this process's), or None outside one."""
    env = os.environ if env is None else env
    pbs_id = env.get("PBS_JOBID") or None
    slurm_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if slurm_id and nodelist:
        cpus = _int(env.get("SLURM_CPUS_ON_NODE")) or _int(env.get("SLURM_JOB_CPUS_PER_NODE"))
        return Allocation("slurm", slurm_id, tuple(expand_hostlist(nodelist)), cpus,
                          _gpus(env), env.get("SLURM_JOB_PARTITION") or None, pbs_id)
    if pbs_id:
        nodes, cpus = _pbs_nodes(env)
        return Allocation("pbs", pbs_id, nodes, cpus, _gpus(env), env.get("PBS_QUEUE") or None,
                          pbs_id)
    return None


def _pbs_nodes(env: Mapping[str, str]) -> tuple[tuple[str, ...], int | None]:
    """Nodes from ``$PBS_NODEFILE`` (one line per CPU slot) and CPUs per node."""
    counts: dict[str, int] = {}
    nodefile = env.get("PBS_NODEFILE")
    if nodefile and Path(nodefile).is_file():
        for line in Path(nodefile).read_text().split():
            counts[line] = counts.get(line, 0) + 1
    cpus = _int(env.get("NCPUS")) or _int(env.get("PBS_NUM_PPN"))
    if counts:
        return tuple(counts), cpus or min(counts.values())
    return ((env.get("HOSTNAME") or os.uname().nodename),), cpus


def allocation_variables(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The scheduler variables present (for ``doctor``): ``SLURM_*`` and ``PBS_*``."""
    env = os.environ if env is None else env
    keys = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES", "SLURM_CPUS_ON_NODE",
            "SLURM_JOB_CPUS_PER_NODE", "SLURM_JOB_PARTITION", "SLURM_NTASKS", "PBS_JOBID",
            "PBS_NODEFILE", "PBS_O_WORKDIR", "PBS_QUEUE", "NCPUS")
    return {k: env[k] for k in keys if env.get(k)}


def time_left_minutes(allocation: Allocation, timeout: float = 10.0) -> int | None:
    """Minutes until the allocation's time limit (SLURM, via squeue), or None if unknown."""
    if allocation.scheduler != "slurm" or shutil.which("squeue") is None:
        return None
    try:
        proc = subprocess.run(["squeue", "-h", "-j", allocation.job_id, "-o", "%L"],
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _parse_slurm_duration(proc.stdout.strip())


def _parse_slurm_duration(text: str) -> int | None:
    """``[days-][hours:]minutes:seconds`` as whole minutes, rounded down (None: unlimited)."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return (((days * 24 + hours) * 60 + minutes) * 60 + seconds) // 60
