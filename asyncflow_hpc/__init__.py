"""asyncflow-hpc: asynchronous scientific workflows, from a laptop to SLURM and PBS clusters.

The programming model is radical.asyncflow's: a script written for it runs after changing
only its import line::

    from asyncflow_hpc import WorkflowEngine, LocalExecutionBackend
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .backends.base import ExecutionBackend, Reporter
from .backends.local import LocalExecutionBackend
from .backends.noop import NoopExecutionBackend
from .engine import WorkflowEngine
from .errors import (
    AsyncFlowError,
    BackendError,
    ConfigurationError,
    DependencyFailureError,
    ExecutableNotFoundError,
    JournalError,
    MissingOutputError,
    PilotFailedError,
    TaskDescriptionError,
    TaskExecutionError,
    TaskTimeoutError,
    UnknownBackendError,
    UnsafePathError,
    WorkerLostError,
)
from .events import Event, EventType
from .files import InputFile, OutputFile
from .sync import run_workflow
from .tasks import TaskFuture, TaskKind, TaskSpec, TaskState

if TYPE_CHECKING:
    from .backends.pilots import PilotPool, PilotTemplate  # noqa: F401
    from .backends.radical import RadicalPilotBackend  # noqa: F401
    from .journal import Journal, ResultStore  # noqa: F401

__all__ = [
    "AsyncFlowError",
    "BackendError",
    "ConfigurationError",
    "DependencyFailureError",
    "Event",
    "EventType",
    "ExecutableNotFoundError",
    "ExecutionBackend",
    "InputFile",
    "Journal",
    "JournalError",
    "LocalExecutionBackend",
    "MissingOutputError",
    "NoopExecutionBackend",
    "OutputFile",
    "PilotFailedError",
    "PilotPool",
    "PilotTemplate",
    "Reporter",
    "ResultStore",
    "TaskDescriptionError",
    "TaskExecutionError",
    "TaskFuture",
    "TaskKind",
    "TaskSpec",
    "TaskState",
    "TaskTimeoutError",
    "UnknownBackendError",
    "UnsafePathError",
    "WorkerLostError",
    "WorkflowEngine",
    "__version__",
    "run_workflow",
]


def __getattr__(name: str) -> Any:
    # RADICAL-Pilot is an optional extra and slow to import: load it on first use only
    if name in ("RadicalPilotBackend", "RadicalExecutionBackend"):
        from .backends.radical import RadicalPilotBackend

        return RadicalPilotBackend
    if name in ("PilotPool", "PilotTemplate"):
        from .backends import pilots

        return getattr(pilots, name)
    if name in ("Journal", "ResultStore"):  # hashing and signing: imported when asked for
        from . import journal

        return getattr(journal, name)
    raise AttributeError(f"module 'asyncflow_hpc' has no attribute {name!r}")
