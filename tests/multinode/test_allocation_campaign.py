"""An in-allocation campaign with ``--nodes 2``: one batch job, its pilot uses both nodes.

``asyncflow-hpc submit campaign.py --site local-slurm --nodes 2`` renders the SLURM campaign
template (``--nodes=2 --exclusive``) and submits it; inside the job ``asyncflow-hpc run
--in-allocation`` starts the RADICAL-Pilot agent by fork on the first node, reads the
allocation (``SLURM_JOB_NODELIST``) and launches one warm worker pool agent per node as an
srun step; the small tasks run on those. The task records (``node``) and what the tasks
themselves print must name both nodes, and no second batch job may appear. ~40-90 s on two
loaded cores.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from multinode_helpers import need_nodes, need_radical, rp_env

if TYPE_CHECKING:
    from multinode_helpers import MultiNodeJobs, SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

CAMPAIGN = r'''
import asyncio, json, os
from asyncflow_hpc import WorkflowEngine

async def main():
    async with WorkflowEngine.create() as flow:
        @flow.executable_task
        def where(i):
            return ["bash", "-c", f"sleep 2; echo task={i} node=$SLURMD_NODENAME job=$SLURM_JOB_ID"]

        futs = [where(i) for i in range(8)]
        outs = await asyncio.gather(*futs)
        tasks = [{"uid": f.uid, "node": flow.components[f.uid].node, "out": o.strip()}
                 for f, o in zip(futs, outs)]
        print("ALLOCATION " + json.dumps({"job": os.environ.get("SLURM_JOB_ID"),
                                          "nodelist": os.environ.get("SLURM_JOB_NODELIST"),
                                          "tasks": tasks}), flush=True)

asyncio.run(main())
'''


@pytest.mark.timeout(360)
def test_in_allocation_campaign_uses_both_nodes(mn_jobs: MultiNodeJobs,
                                                multinode_cluster: SlurmCluster) -> None:
    need_radical()
    need_nodes(multinode_cluster, 2)
    folder = mn_jobs.workdir
    (folder / "campaign.py").write_text(CAMPAIGN)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "asyncflow_hpc", "submit", "campaign.py", "--site", "local-slurm",
         "--nodes", "2", "--runtime", "8", "--job-name", "afhpc-mn-alloc",
         "--campaign-dir", str(folder)],
        cwd=folder, env=rp_env(folder), capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"submit failed:\n{proc.stdout}\n{proc.stderr}"
    job = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+", job), proc.stdout
    mn_jobs.job_ids.append(job)

    seen: set[str] = set()
    output = folder / "afhpc-mn-alloc.out"
    deadline = time.monotonic() + 300
    while mn_jobs.queue_state(job) not in (None, "COMPLETED", "FAILED", "CANCELLED"):
        seen.update(mn_jobs.jobs_in_folder())
        assert time.monotonic() < deadline, output.read_text() if output.exists() else "(no output)"
        time.sleep(1)
    state = mn_jobs.wait(job, timeout=30)
    out = output.read_text() if output.exists() else f"(no {output})"
    assert state == "COMPLETED", out
    assert seen <= {job}, f"a second batch job appeared: {seen}"
    line = next((x for x in out.splitlines() if x.startswith("ALLOCATION ")), None)
    assert line, out
    got = json.loads(line[len("ALLOCATION "):])
    assert got["job"] == job, got

    show = mn_jobs.run(["scontrol", "show", "job", "-o", job], check=False).stdout
    assert re.search(r"\bNumNodes=2\b", show), show
    nodes = {t["node"] for t in got["tasks"]}
    assert None not in nodes and len(nodes) == 2, got["tasks"]
    assert nodes <= set(multinode_cluster.nodes), got["tasks"]
    for t in got["tasks"]:
        assert f"node={t['node']} job={job}" in t["out"], t
    # the small tasks ran on the warm worker pools: one agent per node, each an srun step of
    # this job (RP's SRUN launch method), none forked on the batch node
    launch = list(folder.glob("**/pilot.0000/warm.*/warm.*.launch.sh"))
    assert len(launch) == 2, [p.name for p in launch]
    assert all("srun" in p.read_text() for p in launch), [p.name for p in launch]
    steps = {re.search(r"--nodelist=(\S+)", p.read_text()).group(1) for p in launch}
    assert steps == nodes, (steps, nodes)
    assert "campaign exited with status 0" in out, out
    mn_jobs.settle(timeout=30)
    print(f"in-allocation campaign over {sorted(nodes)} (job {job}): {time.monotonic() - t0:.1f} s")
