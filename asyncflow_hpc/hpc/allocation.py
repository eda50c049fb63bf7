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

import os
from collections.abc import Mapping

from .schedulers import SCHEDULERS, Allocation, scheduler_for
from .schedulers.slurm import expand_hostlist

__all__ = ["Allocation", "allocation_variables", "current_allocation", "expand_hostlist",
           "time_left_minutes"]


def current_allocation(env: Mapping[str, str] | None = None) -> Allocation | None:
    """The allocation described by ``env`` (default: this process's), or None outside one.
    SLURM first: under its Torque front-end a job carries both sets of variables."""
    env = os.environ if env is None else env
    for scheduler in SCHEDULERS.values():
        found = scheduler.allocation(env)
        if found is not None:
            return found
    return None


def allocation_variables(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The scheduler variables present (for ``doctor``): ``SLURM_*`` and ``PBS_*``."""
    env = os.environ if env is None else env
    return {k: env[k] for s in SCHEDULERS.values() for k in s.variables if env.get(k)}


def time_left_minutes(allocation: Allocation) -> int | None:
    """Minutes until the allocation's time limit, or None if unknown."""
    return scheduler_for(allocation.scheduler).time_left_minutes(allocation.job_id)
