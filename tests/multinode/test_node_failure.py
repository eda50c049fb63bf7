"""One node of a running 2-node pilot is taken down mid-campaign; the campaign still finishes.

The campaign (``asyncflow-hpc run`` from the "login node", site ``local-slurm``, 2 nodes) runs
four 20 s tasks, two per node. Once all four have started, the test sets one of the pilot's
nodes ``state=down`` (SLURM kills the job: ``NODE_FAIL``) and then ``drain`` (so that, with
``ReturnToService=2``, it does not come straight back and the scheduler must use another
node). What happens next is the backend's ``on_pilot_failure`` setting:

* ``resubmit``: a replacement pilot starts on the nodes left and the unfinished tasks run
  again there; all four complete and their records name the new nodes;
* ``fail``: the unfinished tasks fail with ``PilotFailedError``; the campaign sees the errors
  and ends.

Either way nothing hangs, no job or process is left, and ``asyncflow-hpc report`` on the
campaign's telemetry shows the outcome (completed on which nodes, or failed and why).

Pilot jobs are submitted with ``SBATCH_NO_REQUEUE=1``: SLURM's default ``JobRequeue=1`` puts a
batch job killed by a node failure back in the queue (eligible again after ~2 min) instead of
ending it, RADICAL-Pilot's client then sees no failure at all and the campaign waits until the
pilot's walltime (measured: still waiting after 5 min). Each variant costs one or two pilot
starts (~60-150 s on two loaded cores).
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
import asyncio, json, sys
from asyncflow_hpc import WorkflowEngine
from asyncflow_hpc.backends.radical import RadicalPilotBackend
from asyncflow_hpc.hpc.resources import radical_backend_options

async def main(mode):
    # the site's pilot (ASYNCFLOW_HPC_SITE / _NODES / _RUNTIME), plus the failure policy
    backend = RadicalPilotBackend(**radical_backend_options(), on_pilot_failure=mode,
                                  max_pilot_restarts=1)
    async with WorkflowEngine.create(backend=backend) as flow:
        @flow.executable_task
        def work(i, task_description={"shell": True}):
            # the marker goes into the pilot's sandbox: ../started.<task>.<node>
            return f"touch ../started.{i}.$SLURMD_NODENAME; sleep 20; echo task={i} node=$SLURMD_NODENAME"

        futs = [work(i) for i in range(4)]
        results = await asyncio.gather(*futs, return_exceptions=True)
        rows = []
        for f, r in zip(futs, results):
            rec = flow.components[f.uid]
            rows.append({"uid": f.uid, "node": rec.node, "state": rec.state.value,
                         "result": r.strip() if isinstance(r, str) else f"{type(r).__name__}: {r}"})
        print("NODEDOWN " + json.dumps(rows), flush=True)

asyncio.run(main(sys.argv[1]))
'''


def markers(folder, pilot: str) -> dict[str, str]:
    """task index -> node, from the ``started.<i>.<node>`` files in one pilot's sandbox."""
    found = {}
    for path in folder.glob(f"asyncflow-work/*/sandbox/radical.pilot.sandbox/*/{pilot}/started.*"):
        _, i, node = path.name.split(".", 2)
        found[i] = node
    return found


@pytest.mark.timeout(600)
@pytest.mark.parametrize("policy", ["resubmit", "fail"])
def test_node_down_mid_campaign(mn_jobs: MultiNodeJobs, multinode_cluster: SlurmCluster,
                                policy: str) -> None:
    need_radical()
    # resubmit needs two nodes besides the lost one for the replacement pilot
    need_nodes(multinode_cluster, 3 if policy == "resubmit" else 2, cpus=2)
    folder = mn_jobs.workdir
    (folder / "campaign.py").write_text(CAMPAIGN)
    env = rp_env(folder)
    env.update({"ASYNCFLOW_HPC_SITE": "local-slurm", "ASYNCFLOW_HPC_NODES": "2",
                "ASYNCFLOW_HPC_RUNTIME": "10", "SBATCH_NO_REQUEUE": "1"})
    events = folder / "events.jsonl"
    log = folder / "client.log"
    t0 = time.monotonic()
    proc = mn_jobs.popen([sys.executable, "-m", "asyncflow_hpc", "run", "campaign.py", "-q",
                          "--telemetry", str(events), policy], env, log)

    # all four tasks running, on both nodes of the first pilot
    pilots: dict[str, str] = {}
    deadline = time.monotonic() + 300  # a pilot took up to ~150 s to start under load
    while len(markers(folder, "pilot.0000")) < 4:
        pilots.update(mn_jobs.jobs_in_folder())
        assert proc.poll() is None, f"campaign ended before its tasks started:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"tasks not all started after 300 s:\n{log.read_text()}"
        time.sleep(0.5)
    first = markers(folder, "pilot.0000")
    used = sorted(set(first.values()))
    assert len(used) == 2, first
    pilots.update(mn_jobs.jobs_in_folder())
    [first_job] = [j for j, st in pilots.items() if st == "RUNNING"] or [None]
    victim = used[-1]
    t_down = time.monotonic()
    mn_jobs.node_down(victim)
    mn_jobs.run(["scontrol", "update", f"nodename={victim}", "state=drain",
                 "reason=afhpc-multinode-test"])

    deadline = time.monotonic() + 300
    while proc.poll() is None:
        pilots.update(mn_jobs.jobs_in_folder())
        assert time.monotonic() < deadline, f"campaign hangs after the node loss:\n{log.read_text()}"
        time.sleep(1)
    took = time.monotonic() - t_down
    out = log.read_text()
    assert proc.returncode == 0, out
    line = next((x for x in out.splitlines() if x.startswith("NODEDOWN ")), None)
    assert line, out
    rows = json.loads(line[len("NODEDOWN "):])
    assert len(rows) == 4, rows
    if first_job:
        final = mn_jobs.final_state(first_job)
        assert final in ("NODE_FAIL", "UNKNOWN"), f"first pilot job {first_job}: {final}"

    report = subprocess.run(
        [sys.executable, "-m", "asyncflow_hpc", "report", str(events), "--out", str(folder / "rep")],
        cwd=folder, env=rp_env(folder), capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL)
    assert report.returncode == 0, f"{report.stdout}\n{report.stderr}"
    summary = json.loads((folder / "rep" / "summary.json").read_text())
    assert summary["tasks"] == 4 and summary["complete"], summary

    # Known false success: on a node failure srun prints "srun: error: Node failure on <node>"
    # and exits 0 (SLURM 22.05), so RP's agent, still alive for KillWait seconds, may report
    # the killed task DONE with empty output before the pilot's end reaches the client. Such
    # tasks are checked apart; everything else must hold, then the test is marked xfail.
    false_ok = [r for r in rows if r["state"] == "DONE" and r["node"] == victim and not r["result"]]
    rest = [r for r in rows if r not in false_ok]
    # a task killed with the job (srun exits non-zero, or a backend that sees through srun's
    # exit 0) may be reported FAILED before the pilot's end arrives: any error is fine there
    lost = [r for r in rest if r["state"] == "FAILED" and not r["result"].startswith("PilotFailed")]

    if policy == "resubmit":
        # a replacement pilot on the nodes left ran the unfinished tasks to the end
        assert "replacement" in out, out
        assert len(pilots) == 2, f"expected the first and one replacement pilot job: {pilots}"
        again = [r for r in rest if r not in lost]
        assert all(r["state"] == "DONE" for r in again), rows
        for r in again:
            assert r["node"] and r["node"] != victim, rows
            assert re.fullmatch(rf"task=\d node={r['node']}", r["result"]), r
        moved = markers(folder, "pilot.0001")
        assert len(moved) == len(again) and victim not in moved.values(), moved
        assert summary["by_state"]["completed"] == len(again) + len(false_ok), summary
        assert summary["failed_total"] == len(lost), summary
        assert sum(n for node, n in summary["nodes"].items() if node != victim) >= len(again), summary
    else:
        # the tasks of the lost pilot failed, with the reason; nothing was retried
        assert len(pilots) == 1, f"no replacement pilot expected: {pilots}"
        assert all(r["state"] == "FAILED" for r in rest), rows
        assert all(r["result"].startswith("PilotFailedError") for r in rest if r not in lost), rows
        assert summary["by_state"]["failed"] == len(rest), summary
        assert "PilotFailedError" in summary["error_types"], summary
        assert "PilotFailedError" in report.stdout, report.stdout
    mn_jobs.settle(timeout=60)
    print(f"node {victim} down ({policy}): campaign ended {took:.1f} s later, "
          f"{time.monotonic() - t0:.1f} s in all; pilots {sorted(pilots)}; "
          f"report: {summary['by_state']} on {summary['nodes']}")
    # srun exits 0 on "Node failure"; the backends see its message and fail such tasks
    assert not false_ok, f"tasks killed by the node failure were reported DONE: {false_ok}"
