"""PBS (Torque, OpenPBS, PBS Pro): ``qsub``, ``qstat``, ``qdel``, and ``PBS_*``.

No PBS server runs where this package is tested: submission is tested through SLURM's
Torque-style ``qsub`` front-end, and the rendered scripts are checked as text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import Allocation, Scheduler, run
from .slurm import gpus_on_node, leading_int

__all__ = ["Pbs"]


class Pbs(Scheduler):
    name = "pbs"
    commands = ("qsub", "qstat", "qdel")
    variables = ("PBS_JOBID", "PBS_NODEFILE", "PBS_O_WORKDIR", "PBS_QUEUE", "NCPUS")

    def submit_argv(self, script: Path, output: str | None = None,
                    extra: Sequence[str] = ()) -> list[str]:
        # the Torque front-end ignores #PBS -o/-j inside the script: say it on the command line
        where = ["-j", "oe", "-o", output] if output else []
        return ["qsub", *where, *extra, str(script)]

    def job_state(self, job: str) -> str | None:
        code, out, _ = run(["qstat", "-f", job], 60)
        match = re.search(r"\bjob_state\s*=\s*(\S+)", out)
        return match.group(1) if code == 0 and match else None

    def cancel(self, job: str) -> None:
        run(["qdel", job], 60)

    def check(self, site: Any) -> list[tuple[str, str, str]]:
        if site.partition:
            code, out, err = run(["qstat", "-Q", site.partition])
            out = (out + err).strip()
            rows = [("ok" if code == 0 else "FAIL", f"queue {site.partition}",
                     out.splitlines()[-1] if out else "")]
        else:
            rows = [("skip", "queue", "none set: the server's default queue is used")]
        rows.append(("skip", f"account {site.account or '-'}",
                     "PBS has no dry-run submission; checked when the job is submitted"))
        return rows

    def allocation(self, env: Mapping[str, str]) -> Allocation | None:
        job = env.get("PBS_JOBID")
        if not job:
            return None
        nodes, cpus = _nodes(env)
        return Allocation("pbs", job, nodes, cpus, gpus_on_node(env),
                          env.get("PBS_QUEUE") or None, job)


def _nodes(env: Mapping[str, str]) -> tuple[tuple[str, ...], int | None]:
    """Nodes from ``$PBS_NODEFILE`` (one line per CPU slot) and CPUs per node."""
    counts: dict[str, int] = {}
    nodefile = env.get("PBS_NODEFILE")
    if nodefile and Path(nodefile).is_file():
        for line in Path(nodefile).read_text().split():
            counts[line] = counts.get(line, 0) + 1
    cpus = leading_int(env.get("NCPUS")) or leading_int(env.get("PBS_NUM_PPN"))
    if counts:
        return tuple(counts), cpus or min(counts.values())
    return ((env.get("HOSTNAME") or os.uname().nodename),), cpus
