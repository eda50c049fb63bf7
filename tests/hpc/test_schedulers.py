"""The scheduler classes without a scheduler: command lines, answers, allocations.

The same classes run against the real SLURM test cluster in tests/slurm/test_schedulers_real.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncflow_hpc.errors import ConfigurationError
from asyncflow_hpc.hpc.allocation import allocation_variables, current_allocation
from asyncflow_hpc.hpc.schedulers import SCHEDULERS, Pbs, Slurm, SubmitError, scheduler_for


@pytest.mark.parametrize("answer, job", [
    ("123\n", "123"), ("4567;cluster\n", "4567"), ("89.pbs-server\n", "89.pbs-server"),
    ("Submitted batch job 42\n", "42"), ("no id here", None), ("", None),
])
def test_the_job_id_is_read_from_the_answer(answer, job):
    assert Slurm().parse_job_id(answer) == job
    assert Pbs().parse_job_id(answer) == job


def test_submit_command_lines(tmp_path):
    script = tmp_path / "job.sh"
    assert Slurm().submit_argv(script, extra=["--qos=x"]) == [
        "sbatch", "--parsable", "--qos=x", str(script)]
    assert Pbs().submit_argv(script, output="/o/job.out") == [
        "qsub", "-j", "oe", "-o", "/o/job.out", str(script)]
    assert Pbs().submit_argv(script) == ["qsub", str(script)]


def test_an_unknown_scheduler_is_named_with_a_suggestion():
    assert scheduler_for("slurm") is SCHEDULERS["slurm"]
    with pytest.raises(ConfigurationError, match=r"unknown scheduler 'slrum' \(did you mean "
                                                 r"'slurm'\?\); known: slurm, pbs"):
        scheduler_for("slrum")
    with pytest.raises(ConfigurationError, match="unknown scheduler 7"):
        scheduler_for(7)  # type: ignore[arg-type]


def test_a_missing_submit_command_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(SubmitError, match="qsub not found on PATH: is this a pbs login node"):
        Pbs().submit(script, output="x.out")


def test_a_refusal_and_an_unreadable_answer_are_one_line_errors(tmp_path, monkeypatch):
    """A fake sbatch (a shell script on PATH): what it prints decides the error."""
    fake = tmp_path / "sbatch"
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    fake.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(SubmitError, match=r"sbatch refused the job \(exit 1\): sbatch: error: "
                                          "invalid partition"):
        Slurm().submit(script)
    fake.write_text("#!/bin/sh\necho queued\n")
    with pytest.raises(SubmitError, match="cannot read a job id from sbatch's answer"):
        Slurm().submit(script)
    fake.write_text("#!/bin/sh\npwd > where\necho 77\n")
    assert Slurm().submit(script) == "77"
    assert (tmp_path / "where").read_text().strip() == str(tmp_path)  # run from its folder


def test_allocations_come_from_each_schedulers_variables(tmp_path: Path):
    slurm = {"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_CPUS_ON_NODE": "4",
             "SLURM_JOB_PARTITION": "debug"}
    a = Slurm().allocation(slurm)
    assert (a.scheduler, a.job_id, a.nodes, a.cpus_per_node, a.partition) == (
        "slurm", "9", ("n1", "n2"), 4, "debug")
    assert Pbs().allocation(slurm) is None
    nodefile = tmp_path / "nodes"
    nodefile.write_text("a\na\nb\nb\n")
    pbs = {"PBS_JOBID": "5.srv", "PBS_NODEFILE": str(nodefile), "PBS_QUEUE": "batch"}
    p = Pbs().allocation(pbs)
    assert (p.scheduler, p.job_id, p.nodes, p.cpus_per_node, p.partition) == (
        "pbs", "5.srv", ("a", "b"), 2, "batch")
    assert Slurm().allocation(pbs) is None
    # SLURM's Torque front-end sets both: SLURM manages the nodes, the PBS id is kept
    both = current_allocation({**slurm, "PBS_JOBID": "9"})
    assert both.scheduler == "slurm" and both.pbs_job_id == "9"
    assert allocation_variables({**slurm, "PBS_JOBID": "9", "HOME": "/h"}) == {
        **slurm, "PBS_JOBID": "9"}
