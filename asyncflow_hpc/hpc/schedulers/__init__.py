"""Batch schedulers, one small class each: :class:`Slurm`, :class:`Pbs` (see :mod:`.base`)."""

from __future__ import annotations

from ...errors import ConfigurationError
from ...suggestions import did_you_mean
from .base import Allocation, Scheduler, SubmitError
from .pbs import Pbs
from .slurm import Slurm

__all__ = ["SCHEDULERS", "Allocation", "Pbs", "Scheduler", "Slurm", "SubmitError",
           "scheduler_for"]

#: every scheduler, by the name sites and templates use
SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (Slurm(), Pbs())}


def scheduler_for(name: str) -> Scheduler:
    """The scheduler called ``name`` (``slurm``, ``pbs``); a clear error for another name."""
    try:
        return SCHEDULERS[name]
    except (KeyError, TypeError):
        raise ConfigurationError(
            f"unknown scheduler {name!r}{did_you_mean(str(name), SCHEDULERS)}; "
            f"known: {', '.join(SCHEDULERS)}") from None
