"""The SLURM test cluster itself works: batch, srun, MPI, Torque qsub, scancel.

These check the ground that the library's SLURM/PBS backends stand on, so a
backend failure can be told apart from a broken cluster.
"""

from __future__ import annotations

import importlib.util
import re
import socket
import sys
from typing import TYPE_CHECKING

import pytest

# Fixtures and helpers come from tests/slurm/conftest.py (not imported: the
# name "conftest" is not a safe module name to import from).
if TYPE_CHECKING:
    from conftest import SlurmCluster, SlurmJobs

pytestmark = pytest.mark.slurm


def test_sbatch_two_tasks(slurm_jobs: SlurmJobs, slurm_cluster: SlurmCluster) -> None:
    job = slurm_jobs.sbatch(
        "#SBATCH --ntasks=2\n"
        "echo \"ntasks=$SLURM_NTASKS job=$SLURM_JOB_ID\"\n"
        "srun bash -c 'echo task=$SLURM_PROCID node=$SLURMD_NODENAME'\n"
    )
    state = slurm_jobs.wait(job)
    out = slurm_jobs.output(job)
    assert state == "COMPLETED", out
    assert f"ntasks=2 job={job}" in out
    tasks = sorted(re.findall(r"^task=(\d+) node=(\S+)$", out, re.M))
    assert [t for t, _ in tasks] == ["0", "1"], out
    assert {n for _, n in tasks} <= set(slurm_cluster.nodes), out


def test_srun_two_tasks_hostname(slurm_jobs: SlurmJobs, slurm_cluster: SlurmCluster) -> None:
    proc = slurm_jobs.srun("-n", "2", "hostname")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert len(lines) == 2, proc.stdout
    # Single node: the host's name; virtual nodes run in their own UTS
    # namespace, so `hostname` there prints the node name.
    assert set(lines) <= set(slurm_cluster.nodes) | {socket.gethostname()}, proc.stdout


def test_srun_mpi4py_two_ranks(slurm_jobs: SlurmJobs) -> None:
    if importlib.util.find_spec("mpi4py") is None:
        slurm_jobs.skip_or_fail(f"mpi4py is not importable in {sys.executable} (pip install mpi4py)")
    code = (
        "from mpi4py import MPI\n"
        "c = MPI.COMM_WORLD\n"
        "r = c.Get_rank()\n"
        "s = c.allreduce(r + 1)\n"
        "print(f'hello rank={r} size={c.Get_size()} sum={s}', flush=True)\n"
    )
    # MpiDefault=pmix in the generated slurm.conf: no --mpi flag needed.
    proc = slurm_jobs.srun("-n", "2", sys.executable, "-c", code, timeout=120)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = sorted(x for x in proc.stdout.splitlines() if x.startswith("hello"))
    assert lines == ["hello rank=0 size=2 sum=3", "hello rank=1 size=2 sum=3"], proc.stdout


def test_torque_qsub_front_end(slurm_jobs: SlurmJobs) -> None:
    job = slurm_jobs.qsub(
        "#!/bin/bash\n"
        "#PBS -N afhpc_pbs\n"
        "#PBS -l nodes=1:ppn=1\n"
        "#PBS -l walltime=00:02:00\n"
        "echo \"pbs_jobid=${PBS_JOBID:-unset} workdir=${PBS_O_WORKDIR:-unset}\"\n"
        "echo \"slurm_job=$SLURM_JOB_ID name=$SLURM_JOB_NAME cpus=$SLURM_CPUS_ON_NODE\"\n"
    )
    state = slurm_jobs.wait(job)
    assert state == "COMPLETED"
    outs = list(slurm_jobs.workdir.glob(f"*.o{job}"))
    assert outs, f"no *.o{job} output in {sorted(p.name for p in slurm_jobs.workdir.iterdir())}"
    out = outs[0].read_text()
    assert f"slurm_job={job} name=afhpc_pbs" in out, out
    # PBS_* are set by the spank_pbs plugin that up.sh enables.
    assert f"pbs_jobid={job}" in out, out
    assert f"workdir={slurm_jobs.workdir}" in out, out
    show = slurm_jobs.run(["scontrol", "show", "job", "-o", job]).stdout
    assert "TimeLimit=00:02:00" in show, show
    assert re.search(r"\bNumCPUs=1\b", show), show


def test_scancel_removes_running_job(slurm_jobs: SlurmJobs) -> None:
    job = slurm_jobs.sbatch("sleep 300\n")
    slurm_jobs.wait_state(job, {"RUNNING"})
    slurm_jobs.run(["scancel", job])
    state = slurm_jobs.wait(job, timeout=30)
    assert state == "CANCELLED"
    assert slurm_jobs.queue_state(job) is None
    listed = slurm_jobs.run(["squeue", "-h", "-o", "%i"]).stdout.split()
    assert job not in listed, listed

