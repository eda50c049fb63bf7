"""What every batch scheduler offers this package, and the allocation it describes.

One small class per scheduler (:mod:`.slurm`, :mod:`.pbs`) owns everything this package
asks of it: the command that submits a script and how its answer names the job, the job's
state, cancelling it, how many cores a node has, the checks of a site, the batch templates
it renders (``batch_templates/<name>/``) and the environment an allocation of it sets.
Callers never build a scheduler command line themselves.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["Allocation", "Scheduler", "SubmitError", "run"]


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


class SubmitError(RuntimeError):
    """A job could not be submitted; the message says why in one line."""


def run(argv: Sequence[str], timeout: float = 30.0, *, cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of a scheduler command; code 127 if it cannot run."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=cwd,
                              env=dict(env) if env is not None else None)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} did not answer within {timeout:.0f} s"
    except OSError as exc:
        return 127, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


_JOB_ID = re.compile(r"\d+(?:\.[\w.-]+)?")


class Scheduler:
    """One batch scheduler (see the module docstring); subclasses fill in the commands."""

    name = ""
    #: the commands a login node of this scheduler has (``sites check``, ``doctor``)
    commands: tuple[str, ...] = ()

    # ------------------------------------------------------------------ submission
    def submit_argv(self, script: Path, output: str | None = None,
                    extra: Sequence[str] = ()) -> list[str]:
        raise NotImplementedError

    def parse_job_id(self, answer: str) -> str | None:
        """The job id in the submit command's answer (``123``, ``123;cluster``,
        ``123.server``), or None."""
        match = _JOB_ID.search(answer.strip().split(";")[0])
        return match.group(0) if match else None

    def submit(self, script: Path, *, output: str | None = None, extra: Sequence[str] = (),
               env: Mapping[str, str] | None = None, timeout: float = 120.0) -> str:
        """Submit ``script`` (from its own folder); the job id. Raises :class:`SubmitError`."""
        argv = self.submit_argv(script, output, extra)
        tool = argv[0]
        if shutil.which(tool) is None:
            raise SubmitError(f"{tool} not found on PATH: is this a {self.name} login node?")
        code, out, err = run(argv, timeout, cwd=script.parent, env=env)
        if code == 124:
            raise SubmitError(err)
        if code != 0:
            raise SubmitError(f"{tool} refused the job (exit {code}): {(err or out).strip()}")
        job = self.parse_job_id(out)
        if job is None:
            raise SubmitError(f"cannot read a job id from {tool}'s answer: {out!r}")
        return job

    # ------------------------------------------------------------------ jobs
    def job_state(self, job: str) -> str | None:
        """The job's state in this scheduler's words, or None once it has forgotten it."""
        raise NotImplementedError

    def cancel(self, job: str) -> None:
        """Cancel ``job`` (no error if it has ended)."""
        raise NotImplementedError

    def time_left_minutes(self, job: str) -> int | None:
        """Minutes until ``job``'s time limit, or None if unknown."""
        return None

    # ------------------------------------------------------------------ the machine
    def cores_per_node(self, partition: str | None = None) -> int | None:
        """CPUs of the smallest node of ``partition`` (the default one), or None if unknown."""
        return None

    def node_count(self, partition: str | None = None) -> int | None:
        """Nodes of ``partition`` (the default one), or None if unknown."""
        return None

    def check(self, site: Any) -> list[tuple[str, str, str]]:
        """``(status, check, detail)`` rows checking ``site``'s queue and account here."""
        return []

    def controller_up(self) -> bool | None:
        """Whether the scheduler answers (None: cannot tell)."""
        return None

    # ------------------------------------------------------------------ inside a job
    def allocation(self, env: Mapping[str, str]) -> Allocation | None:
        """The allocation ``env`` describes, if it is one of this scheduler's."""
        return None

    #: the variables of an allocation worth showing (``doctor``)
    variables: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
