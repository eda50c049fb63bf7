"""Allocation facts from scheduler variables (no scheduler needed)."""

from __future__ import annotations

import pytest

from asyncflow_hpc.hpc.allocation import current_allocation, expand_hostlist
from asyncflow_hpc.hpc.launchers import mpi_launch_prefix
from asyncflow_hpc.hpc.schedulers.slurm import parse_duration


@pytest.mark.parametrize("text, names", [
    ("vm", ["vm"]),
    ("afnode[1-3]", ["afnode1", "afnode2", "afnode3"]),
    ("n[01-02,7],gpu1", ["n01", "n02", "n7", "gpu1"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
])
def test_expand_hostlist(text, names):
    assert expand_hostlist(text) == names


def test_slurm_allocation():
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "afnode[1-3]", "SLURM_CPUS_ON_NODE": "4",
           "SLURM_JOB_PARTITION": "debug", "PBS_JOBID": "42"}
    alloc = current_allocation(env)
    assert alloc is not None
    assert (alloc.scheduler, alloc.job_id, alloc.nodes) == ("slurm", "42", ("afnode1", "afnode2", "afnode3"))
    assert alloc.cpus_per_node == 4 and alloc.total_cpus == 12 and alloc.pbs_job_id == "42"


def test_pbs_allocation(tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("a\na\nb\nb\n")
    alloc = current_allocation({"PBS_JOBID": "7.server", "PBS_NODEFILE": str(nodefile)})
    assert alloc is not None
    assert (alloc.scheduler, alloc.nodes, alloc.cpus_per_node) == ("pbs", ("a", "b"), 2)


def test_no_allocation():
    assert current_allocation({}) is None


@pytest.mark.parametrize("text, minutes", [
    ("1-02:03:04", 1563), ("02:03:04", 123), ("5:59", 5), ("UNLIMITED", None), ("", None)])
def test_time_left(text, minutes):
    assert parse_duration(text) == minutes


def test_mpi_prefix_follows_allocation():
    inside = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "vm", "PATH": "/usr/bin:/bin"}
    assert mpi_launch_prefix(2, env=inside)[:3] == ["srun", "--ntasks", "2"]
