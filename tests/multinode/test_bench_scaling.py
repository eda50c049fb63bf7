"""``asyncflow-hpc bench scaling`` over 1, 2 and 3 nodes: one batch job per point, JSON + plot.

Weak scaling with a few short sleeps per node: the series must have one point per node count,
each point's job must really have had that many nodes (the hosts the per-node workers ran
on), and the plot must be written. On this cluster all nodes share two cores, so the numbers
say nothing about speed; the test checks the harness and the placement, not the values.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from multinode_helpers import need_nodes, rp_env

if TYPE_CHECKING:
    from multinode_helpers import MultiNodeJobs, SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]


@pytest.mark.timeout(420)
def test_weak_scaling_over_one_two_three_nodes(mn_jobs: MultiNodeJobs,
                                               multinode_cluster: SlurmCluster) -> None:
    pytest.importorskip("matplotlib")  # CI installs it ('.[all]'), so this never skips there
    need_nodes(multinode_cluster, 3)
    folder = mn_jobs.workdir
    out, png = folder / "scaling.json", folder / "scaling.png"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "asyncflow_hpc", "bench", "scaling", "--site", "local-slurm",
         "--nodes", "1,2,3", "--mode", "weak", "--workload", "sleep-exe", "--size", "4",
         "--duration", "0.2", "--timeout", "120", "--walltime", "5",
         "--work-dir", str(folder / "work"), "--job-name", mn_jobs.tag,
         "--json", str(out), "--plot", str(png)],
        cwd=folder, env=rp_env(folder), capture_output=True, text=True, timeout=400,
        stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    doc = json.loads(out.read_text())
    assert doc["schema"] == "asyncflow-hpc.bench/1" and doc["kind"] == "scaling"
    assert doc["series"]["nodes"] == [1, 2, 3] and doc["series"]["mode"] == "weak"
    points = doc["points"]
    mn_jobs.job_ids.extend(p["job_id"] for p in points if p.get("job_id"))  # cleanup knows them
    assert [p["nodes"] for p in points] == [1, 2, 3], points
    for p in points:
        assert p["error"] is None, p
        assert p["job_state"] in ("COMPLETED", "GONE"), p
        # weak scaling: --size tasks per node, all done, on as many distinct nodes as asked
        assert p["tasks"] == p["completed"] == 4 * p["nodes"], p
        assert len(set(p["hosts"])) == p["nodes"], p
        assert set(p["hosts"]) <= set(multinode_cluster.nodes), p
        assert p["makespan_s"] > 0 and p["throughput"] > 0, p
    assert len({p["job_id"] for p in points}) == 3, points
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10_000
    print(f"bench scaling 1,2,3 nodes: {time.monotonic() - t0:.1f} s; "
          + ", ".join(f"{p['nodes']}n {p['throughput']:.1f}/s on {sorted(set(p['hosts']))}"
                      for p in points))
