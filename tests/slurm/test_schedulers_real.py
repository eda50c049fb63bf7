"""The scheduler classes against the real SLURM test cluster (and its Torque-style qsub)."""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

import pytest

from asyncflow_hpc.hpc.schedulers import Pbs, Slurm
from asyncflow_hpc.hpc.sites import site_from_dict

if TYPE_CHECKING:
    from conftest import SlurmCluster, SlurmJobs

pytestmark = pytest.mark.slurm


def _wait_gone(slurm: Slurm, job: str, timeout: float = 60) -> str | None:
    deadline = time.monotonic() + timeout
    state = slurm.job_state(job)
    while state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING") and \
            time.monotonic() < deadline:
        time.sleep(0.3)
        state = slurm.job_state(job)
    return state


def test_submit_state_and_cancel_through_slurm(slurm_jobs: SlurmJobs, tmp_path) -> None:
    slurm = Slurm()
    assert slurm.controller_up() is True
    script = tmp_path / "nap.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --job-name={slurm_jobs.tag}\n#SBATCH --time=2\n"
                      f"#SBATCH --output={tmp_path}/%j.out\nsleep 300\n")
    job = slurm.submit(script)
    slurm_jobs.job_ids.append(job)  # cancelled at teardown whatever happens here
    assert slurm.job_state(job) in ("PENDING", "RUNNING", "CONFIGURING")
    left = slurm.time_left_minutes(job)
    assert left is None or 0 <= left <= 2
    slurm.cancel(job)
    assert _wait_gone(slurm, job) in ("CANCELLED", None)


def test_cores_per_node_is_what_slurm_says(slurm_cluster: SlurmCluster) -> None:
    assert Slurm().cores_per_node() == min(slurm_cluster.cpus.values())
    assert Slurm().cores_per_node(slurm_cluster.partition) == min(slurm_cluster.cpus.values())
    assert Slurm().cores_per_node("no-such-partition") is None


def test_site_checks_pass_on_the_cluster_and_name_a_bad_partition(
        slurm_cluster: SlurmCluster) -> None:
    good = site_from_dict("here", {"scheduler": "slurm", "partition": slurm_cluster.partition})
    rows = Slurm().check(good)
    assert [r[0] for r in rows] == ["ok", "ok"], rows
    bad = site_from_dict("there", {"scheduler": "slurm", "partition": "nope"})
    assert [r[0] for r in Slurm().check(bad)] == ["FAIL", "FAIL"]


def test_qsub_submission_through_the_torque_front_end(slurm_jobs: SlurmJobs, tmp_path) -> None:
    if shutil.which("qsub") is None:
        slurm_jobs.skip_or_fail("qsub (slurm-wlm-torque) is not installed")
    script = tmp_path / "hello.pbs"
    script.write_text(f"#!/bin/bash\n#PBS -N {slurm_jobs.tag}\n#PBS -l walltime=00:02:00\n"
                      "echo hello from pbs\n")
    job = Pbs().submit(script, output=str(tmp_path / "hello.out"))
    slurm_jobs.job_ids.append(job.split(".")[0])
    assert _wait_gone(Slurm(), job.split(".")[0]) in ("COMPLETED", None)
    deadline = time.monotonic() + 30
    while not (tmp_path / "hello.out").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "hello from pbs" in (tmp_path / "hello.out").read_text()
