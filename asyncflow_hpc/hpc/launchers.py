"""How MPI tasks are started, and what their launcher says when a node dies.

One argv prefix for every place that starts ranks (the local backend, benchmark workloads,
batch jobs): ``srun`` inside a SLURM allocation (its MPI plugin wires the ranks and places
them on the allocation's CPUs), ``mpirun``/``mpiexec`` elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping

from ..errors import ConfigurationError

__all__ = ["LAUNCHERS", "mpi_launch_prefix", "node_failure"]

LAUNCHERS = ("srun", "mpirun", "mpiexec")


def mpi_launch_prefix(ranks: int, launcher: str | None = None,
                      env: Mapping[str, str] | None = None, *,
                      oversubscribe: bool = False) -> list[str]:
    """argv prefix that starts ``ranks`` MPI ranks.

    ``launcher`` forces ``srun``, ``mpirun`` or ``mpiexec`` (``mpirun`` falls back to
    ``mpiexec`` when only that is installed); by default ``srun`` inside a SLURM allocation,
    else ``mpirun``/``mpiexec``. ``oversubscribe`` lets OpenMPI start more ranks than cores
    (the local backend shares a laptop's cores between tasks). Raises ConfigurationError when
    no launcher is on PATH.
    """
    if launcher is not None and launcher not in LAUNCHERS:
        raise ConfigurationError(f"MPI launcher must be one of {', '.join(LAUNCHERS)}, "
                                 f"got {launcher!r}")
    if launcher is None:
        from .allocation import current_allocation

        alloc = current_allocation(os.environ if env is None else env)
        if alloc is not None and alloc.scheduler == "slurm":
            launcher = "srun"
    if launcher == "srun":
        return ["srun", "--ntasks", str(ranks), "--cpus-per-task", "1", "--overlap",
                "--quit-on-interrupt"]
    names = ["mpiexec"] if launcher == "mpiexec" else ["mpirun", "mpiexec"]
    for name in names:
        path = shutil.which(name)
        if path:
            prefix = [path, "-n", str(ranks)]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                prefix.append("--allow-run-as-root")
            return prefix + (["--oversubscribe"] if oversubscribe else [])
    raise ConfigurationError(
        f"a task asks for {ranks} ranks but no MPI launcher ({'/'.join(names)}) is on PATH")


_NODE_FAILURE = re.compile(r"srun: error: Node failure on (\S+)")


def node_failure(stderr: str | None) -> str | None:
    """The node srun says it lost, if it did: SLURM's srun prints "Node failure on <node>" and
    may still exit 0, so a task killed with its node would otherwise count as a success."""
    if not stderr or "Node failure" not in stderr:
        return None
    m = _NODE_FAILURE.search(stderr)
    return m.group(1) if m else None
