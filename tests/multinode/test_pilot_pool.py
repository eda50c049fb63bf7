"""PilotPool on the 3-node SLURM test cluster, with real RADICAL-Pilot pilot jobs.

The cluster has partitions ``cpu`` (afnode1, afnode2) and ``gpu`` (afnode3; SLURM knows no
GPU there: the gpu template's site declares ``gpus_per_node = 1`` to RP, and launches with
mpiexec so that srun asks SLURM for no GPU). The campaign is ``tests/pilot_pool_campaign.py``.
Each pilot start costs ~15-110 s on two loaded cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from multinode_helpers import MultiNodeJobs, SlurmCluster

from multinode_helpers import need_nodes, need_radical, rp_env

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

CAMPAIGN = Path(__file__).resolve().parents[1] / "pilot_pool_campaign.py"
ROOT_MPI = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
GPU_SITE = {"name": "local-gpu", "scheduler": "slurm", "partition": "gpu", "gpus_per_node": 1,
            "launcher": "mpiexec", "exclusive": True, "walltime": 10, "environment": ROOT_MPI}


def run_campaign(mn_jobs: MultiNodeJobs, cfg: dict, timeout: float) -> dict:
    folder = mn_jobs.workdir
    (folder / "cfg.json").write_text(json.dumps(cfg))
    log = folder / "client.log"
    proc = mn_jobs.popen([sys.executable, str(CAMPAIGN), "cfg.json"], rp_env(folder), log)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, f"campaign still running after {timeout} s:\n" \
                                            f"{log.read_text()[-4000:]}"
        time.sleep(1)
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    assert line, out[-4000:]
    mn_jobs.settle()
    return json.loads(line[len("RESULT "):])


def decisions(result: dict, action: str, pilot_prefix: str = "") -> list[dict]:
    return [a for _, kind, a in result["notes"] if kind == "PilotDecision"
            and a.get("action") == action and str(a.get("pilot", "")).startswith(pilot_prefix)]


def fields(out: str) -> dict[str, str]:
    return dict(x.split("=", 1) for x in out.split() if "=" in x)


@pytest.mark.timeout(600)
def test_routing_scale_out_and_scale_in(mn_jobs: MultiNodeJobs,
                                        multinode_cluster: SlurmCluster) -> None:
    """CPU tasks land on cpu-partition pilots, GPU tasks on the gpu pilot; a backlog scales
    the cpu template out to 2 pilots; idle pilots are ended; an unroutable task fails at
    once naming what each template lacks."""
    need_radical()
    need_nodes(multinode_cluster, 3, cpus=2)
    cfg = {
        "templates": [
            {"name": "cpu", "site": "local-slurm", "partition": "cpu", "nodes": 1,
             "runtime": 10, "max_pilots": 2},
            {"name": "gpu", "site": GPU_SITE, "nodes": 1, "runtime": 10, "max_pilots": 1},
        ],
        "pool": {"scale_out_after": 5, "idle_timeout": 8},
        "phases": [[{"name": "cpu", "count": 16, "seconds": 4},
                    {"name": "gpu", "count": 3, "seconds": 2, "td": {"gpus_per_rank": 1}}]],
        "linger": 30, "unroutable": {"gpus_per_rank": 2}, "telemetry": "events.jsonl",
    }
    r = run_campaign(mn_jobs, cfg, 540)
    assert all(t["error"] is None for t in r["tasks"]), r["tasks"]
    assert r["counts"]["done"] == 19 and sorted(r["marks"]) == sorted(set(r["marks"])), r
    assert len(r["marks"]) == 19, r["marks"]
    for t in r["tasks"]:
        f = fields(t["out"])
        if t["group"] == "gpu":  # on the gpu pilot
            assert f["part"] == "gpu" and f["node"] == "afnode3", t
        else:
            assert f["part"] == "cpu" and f["node"] in ("afnode1", "afnode2"), t
    cpu_jobs = {fields(t["out"])["job"] for t in r["tasks"] if t["group"] == "cpu"}
    assert len(cpu_jobs) == 2, cpu_jobs  # the backlog used both cpu pilots

    started = decisions(r, "PilotStarted", "cpu.")
    assert [d["pilot"] for d in started] == ["cpu.1", "cpu.2"], started
    assert started[1]["reason"].startswith("scale out: "), started
    assert {d["pilot"] for d in decisions(r, "PilotActive")} == {"cpu.1", "cpu.2", "gpu.1"}
    scaled_in = [d for d in decisions(r, "PilotStopped") if d["reason"].startswith("scale in")]
    assert {d["pilot"] for d in scaled_in} == {"cpu.1", "cpu.2", "gpu.1"}, r["notes"]

    assert r["unroutable"] is not None and r["unroutable"]["seconds"] < 1, r["unroutable"]
    text = r["unroutable"]["error"]
    assert text.startswith("ConfigurationError: no pilot template offers"), text
    assert "cpu: it has no GPU" in text and "gpu: its nodes have 1 GPU(s)" in text, text

    costs = r["costs"]
    for p in costs["pilots"]:
        assert p["state"] == "ended" and p["used_node_hours"] > 0, p
        assert p["held_node_hours"] > p["used_node_hours"], p
    assert costs["held_node_hours"] == pytest.approx(
        sum(p["held_node_hours"] for p in costs["pilots"]), abs=1e-5)

    # the report shows every pilot with its cost, and the pool's decisions
    folder = mn_jobs.workdir
    rep = subprocess.run([sys.executable, "-m", "asyncflow_hpc", "report", "events.jsonl",
                          "--out", "report"], cwd=folder, capture_output=True, text=True,
                         timeout=120)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "node-hours held" in rep.stdout, rep.stdout
    section = json.loads((folder / "report" / "summary.json").read_text())["pilots"]
    assert sorted(p["pilot"] for p in section["pilots"]) == ["cpu.1", "cpu.2", "gpu.1"]
    assert section["without_end"] == 0 and section["held_node_hours"] == pytest.approx(
        costs["held_node_hours"], rel=0.02), section
    assert any(d["reason"].startswith("scale in") for d in section["decisions"]), section


@pytest.mark.timeout(600)
def test_pilot_killed_during_scale_out_loses_no_task(mn_jobs: MultiNodeJobs,
                                                     multinode_cluster: SlurmCluster) -> None:
    """The first pilot's job is scancelled while the pool scales out: its running tasks go
    back in line and run on the other pilots; every task has one result."""
    need_radical()
    need_nodes(multinode_cluster, 3, cpus=2)
    cfg = {
        "templates": [{"name": "cpu", "site": "local-slurm", "nodes": 1, "runtime": 10,
                       "max_pilots": 2}],
        "pool": {"scale_out_after": 20, "idle_timeout": 60},
        "phases": [[{"name": "w", "count": 20, "seconds": 8}]],
        "kill": {"when": "cpu.2", "pilot": "cpu.1"},
    }
    r = run_campaign(mn_jobs, cfg, 540)
    assert r["killed"].get("cpu.1"), r["killed"]  # a job was found and cancelled
    assert all(t["error"] is None for t in r["tasks"]), r["tasks"]
    assert r["counts"] == {"submitted": 20, "done": 20, "failed": 0, "cancelled": 0}, r["counts"]
    # every body ended; one that ended on the killed pilot as it died, before its end was
    # reported, ran again (its result never came): at most the moved tasks end twice
    assert set(r["marks"]) == {f"w-{i}" for i in range(20)}, r["marks"]
    lost = decisions(r, "PilotLost", "cpu.1")
    assert len(lost) == 1 and lost[0]["moved"] >= 1, r["notes"]
    assert len(r["marks"]) - 20 <= lost[0]["moved"], (r["marks"], lost)
    assert len(decisions(r, "PilotStarted")) >= 2, r["notes"]
    ended = {p["pilot"]: p for p in r["costs"]["pilots"]}
    assert ended["cpu.1"]["moved"] >= 1 and ended["cpu.1"]["end_reason"].startswith("lost"), ended
    # the tasks that finished in the killed job are the ones the pool counted done there
    on_killed = [t for t in r["tasks"] if fields(t["out"])["job"] == r["killed"]["cpu.1"]]
    assert len(on_killed) == ended["cpu.1"]["done"], (on_killed, ended["cpu.1"])
