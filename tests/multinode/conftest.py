"""Fixtures for tests that need a SLURM cluster with several compute nodes.

The cluster is ``scripts/slurm/up.sh --nodes 3 --cpus-per-node 2``: one controller and
``afnode1..afnode3`` on 127.0.0.2-4, all on this machine (``scripts/test.sh`` brings it up
for this folder after the single-node tests). These fixtures never start or restart SLURM.
When the cluster answers with fewer than two usable nodes the tests skip, and fail under
``CI=true`` so that a broken multi-node cluster cannot hide behind skips.

``mn_jobs`` is ``tests/slurm``'s ``slurm_jobs`` plus what multi-node tests need at teardown:
every job whose working folder is inside the test's folder is cancelled (RADICAL-Pilot's
pilot jobs carry a PSI/J name, not our tag), nodes a test put down are resumed, and no
process may be left working in the folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from multinode_helpers import UP_HINT, MultiNodeJobs, SlurmCluster, skip_or_fail, slurm


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "multinode: needs the multi-node SLURM test cluster (up.sh --nodes 3)")


@pytest.fixture(scope="session")
def multinode_cluster() -> SlurmCluster:
    cluster, why = slurm.slurm_status()
    if cluster is None:
        skip_or_fail(f"{why}; {UP_HINT}")
    assert cluster is not None
    if len(cluster.nodes) < 2:
        skip_or_fail(f"SLURM has {len(cluster.nodes)} usable node(s) ({', '.join(cluster.nodes)}); "
                     f"these tests need at least 2: {UP_HINT}")
    return cluster


@pytest.fixture
def mn_jobs(multinode_cluster: SlurmCluster, tmp_path: Path):
    jobs = MultiNodeJobs(multinode_cluster, tmp_path)
    yield jobs
    problems = jobs.teardown()
    if problems:
        pytest.fail("teardown: " + "; ".join(problems), pytrace=False)
