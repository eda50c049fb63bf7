"""A RADICAL-Pilot pilot over two nodes, submitted through sbatch from the "login node".

The campaign runs as ``asyncflow-hpc run`` with the site ``local-slurm`` and two nodes (the
``ASYNCFLOW_HPC_SITE``/``_NODES`` variables that ``run --site ... --nodes 2`` sets), so RP
submits one 2-node pilot job. Single-core tasks must land on both nodes and their task
records must say where (``flow.components[uid].node``, filled by the RP backend from the
task's slots); a 4-rank mpi4py task must span both nodes (its ranks report different
``SLURMD_NODENAME``). One pilot start costs ~40-110 s on two loaded cores.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from multinode_helpers import MultiNodeJobs, SlurmCluster

from multinode_helpers import need_mpi4py, need_nodes, need_radical, rp_env

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

CAMPAIGN = r'''
import asyncio, json, sys
from asyncflow_hpc import WorkflowEngine

HELLO = ("import os; from mpi4py import MPI; c = MPI.COMM_WORLD; "
         "print(f'rank={c.Get_rank()} size={c.Get_size()} node={os.environ.get(\"SLURMD_NODENAME\")} "
         "sum={c.allreduce(c.Get_rank() + 1)}', flush=True)")

async def main():
    async with WorkflowEngine.create() as flow:
        @flow.executable_task
        def where(i):
            return ["bash", "-c", f"sleep 3; echo task={i} node=$SLURMD_NODENAME host=$(hostname)"]

        @flow.executable_task
        def mpi(task_description={"ranks": 4}):
            return [sys.executable, "-c", HELLO]

        # the MPI task first: it needs the whole pilot (2 nodes x 2 cores) at once
        m = mpi()
        mpi_out = await m
        futs = [where(i) for i in range(8)]
        outs = await asyncio.gather(*futs)
        tasks = [{"uid": f.uid, "node": flow.components[f.uid].node, "out": o.strip()}
                 for f, o in zip(futs, outs)]
        print("PLACEMENT " + json.dumps({"tasks": tasks, "mpi": mpi_out,
                                         "mpi_node": flow.components[m.uid].node}), flush=True)

asyncio.run(main())
'''


@pytest.mark.timeout(480)
def test_pilot_over_two_nodes_places_tasks_and_mpi_ranks_on_both(
        mn_jobs: MultiNodeJobs, multinode_cluster: SlurmCluster) -> None:
    need_radical()
    need_mpi4py()
    need_nodes(multinode_cluster, 2, cpus=2)
    folder = mn_jobs.workdir
    (folder / "campaign.py").write_text(CAMPAIGN)
    env = rp_env(folder)
    env.update({"ASYNCFLOW_HPC_BACKEND": "radical", "ASYNCFLOW_HPC_SITE": "local-slurm",
                "ASYNCFLOW_HPC_NODES": "2", "ASYNCFLOW_HPC_RUNTIME": "10"})
    log = folder / "client.log"
    t0 = time.monotonic()
    proc = mn_jobs.popen([sys.executable, "-m", "asyncflow_hpc", "run", "campaign.py", "-q",
                          "--telemetry", str(folder / "events.jsonl")], env, log)
    pilots: dict[str, str] = {}
    deadline = time.monotonic() + 420  # ~45 s unloaded; 6 min seen at load average 20
    while proc.poll() is None:
        pilots.update(mn_jobs.jobs_in_folder())
        assert time.monotonic() < deadline, f"campaign still running after 420 s:\n{log.read_text()}"
        time.sleep(1)
    out = log.read_text()
    assert proc.returncode == 0, out
    assert pilots, "no pilot job was seen in squeue"
    line = next((x for x in out.splitlines() if x.startswith("PLACEMENT ")), None)
    assert line, out
    got = json.loads(line[len("PLACEMENT "):])

    # the task records name the node, and it is the node the task really ran on
    nodes = {t["node"] for t in got["tasks"]}
    assert None not in nodes, got["tasks"]
    assert len(nodes) == 2 and nodes <= set(multinode_cluster.nodes), got["tasks"]
    for t in got["tasks"]:
        assert f"node={t['node']}" in t["out"], t

    # 4 ranks over both nodes, 2 on each (2 cores per node)
    # every line tagged with its rank ("R: ..."), and the tag is the rank that wrote it
    tagged = [x.split(": ", 1) for x in got["mpi"].splitlines() if ": rank=" in x]
    assert all(f"rank={tag}" == text.split()[0] for tag, text in tagged), got["mpi"]
    ranks = sorted(text.split() for _, text in tagged)
    assert [r[0] for r in ranks] == [f"rank={i}" for i in range(4)], got["mpi"]
    assert {r[1] for r in ranks} == {"size=4"} and {r[3] for r in ranks} == {"sum=10"}, got["mpi"]
    rank_nodes = [r[2].removeprefix("node=") for r in ranks]
    assert len(set(rank_nodes)) == 2 and set(rank_nodes) == nodes, got["mpi"]
    assert sorted(rank_nodes.count(n) for n in set(rank_nodes)) == [2, 2], got["mpi"]

    # one pilot job, and it spanned two nodes
    assert len(pilots) == 1, pilots
    mn_jobs.settle()
    print(f"2-node pilot: tasks on {sorted(nodes)}, MPI ranks on {rank_nodes}, "
          f"{time.monotonic() - t0:.1f} s")
