"""PilotPool on the single-node SLURM test cluster: bad templates are refused before anything
is queued, and a campaign longer than one pilot's walltime runs on a chain of pilots.

The campaign is ``tests/pilot_pool_campaign.py``; one pilot start costs ~15-110 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from test_hpc_login import jobs_in, need_radical, settle

from asyncflow_hpc import ConfigurationError, PilotPool, WorkflowEngine

if TYPE_CHECKING:
    from conftest import SlurmJobs

pytestmark = pytest.mark.slurm

CAMPAIGN = Path(__file__).resolve().parents[1] / "pilot_pool_campaign.py"


@pytest.mark.parametrize(("template", "expect"), [
    ({"nodes": 2}, "asks for 2 nodes per pilot but the default partition has 1; no pilot of "
                   "it could ever start"),
    ({"partition": "nosuchpart"}, "partition 'nosuchpart' has no nodes on this cluster"),
])
def test_template_no_pilot_could_run_is_refused_before_queueing(
        template: dict, expect: str, slurm_jobs: SlurmJobs, tmp_path: Path) -> None:
    need_radical(slurm_jobs)
    pool = PilotPool([{"name": "big", "site": "local-slurm", **template}],
                     work_dir=tmp_path / "work")

    async def main() -> None:
        async with WorkflowEngine.create(backend=pool, work_dir=tmp_path / "engine"):
            pass

    t0 = time.monotonic()
    with pytest.raises(ConfigurationError) as info:
        asyncio.run(main())
    assert str(info.value) == f"pilot template 'big' {expect}" or expect in str(info.value), \
        str(info.value)
    assert str(info.value).startswith("pilot template 'big'"), str(info.value)
    assert time.monotonic() - t0 < 30
    assert not jobs_in(tmp_path, slurm_jobs)  # nothing queued, not even for a moment
    assert not pool.pilots and not slurm_jobs.leftovers(tmp_path)


@pytest.mark.timeout(720)
def test_campaign_longer_than_a_walltime_runs_on_a_chain_of_pilots(
        slurm_jobs: SlurmJobs, tmp_path: Path) -> None:
    """2-minute pilots, 24 x 10 s tasks on 2 cores: the first pilot is replaced before its
    walltime ends, drained, and every task runs to its end exactly once."""
    need_radical(slurm_jobs)
    cfg = {
        "templates": [{"name": "cpu", "site": "local-slurm", "nodes": 1, "runtime": 2,
                       "min_pilots": 1, "max_pilots": 1}],
        "pool": {"drain_margin": 15},
        "phases": [[{"name": "w", "count": 24, "seconds": 10}]],
        "journal": "journal.jsonl",
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / ".xdg"), "RADICAL_PROFILE": "FALSE",
           "RADICAL_DEFAULT_IFACE": "lo", "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "client.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(CAMPAIGN), "cfg.json"], cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        proc.wait(660)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(10)
        for job in jobs_in(tmp_path, slurm_jobs):
            slurm_jobs.run(["scancel", job], check=False)
        pytest.fail("campaign still running after 660 s:\n" + (tmp_path / "client.log").read_text())
    out = (tmp_path / "client.log").read_text()
    assert proc.returncode == 0, out[-4000:]
    r = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[7:])
    settle(tmp_path, slurm_jobs, 60)

    assert r["counts"] == {"submitted": 24, "done": 24, "failed": 0, "cancelled": 0}, r["counts"]
    assert sorted(r["marks"]) == sorted(f"w-{i}" for i in range(24)), r["marks"]
    acts = [(a["action"], a.get("pilot"), a.get("reason", "")) for _, kind, a in r["notes"]
            if kind == "PilotDecision"]
    active = [p for a, p, _ in acts if a == "PilotActive"]
    assert len(active) >= 2, acts  # the campaign needed more than one pilot
    assert any(a == "PilotStarted" and why.startswith("replaces cpu.1:") for a, _, why in acts), acts
    assert any(a == "PilotStopped" and p == "cpu.1" and why.startswith("walltime:")
               for a, p, why in acts), acts
    assert not [a for a in acts if a[0] in ("PilotLost", "PilotFailed")], acts
    jobs = {t["out"].split()[0] for t in r["tasks"]}
    assert len(jobs) >= 2, jobs  # tasks ran in two pilot jobs
    ended = {p["pilot"]: p for p in r["costs"]["pilots"]}
    assert ended["cpu.1"]["done"] + ended["cpu.1"]["moved"] >= 1, ended
    assert sum(p["done"] for p in ended.values()) == 24, ended  # each counted once
    records = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert len(records) == 24 and len({x["k"] for x in records}) == 24  # journaled once


@pytest.mark.timeout(400)
def test_ctrl_c_ends_every_pilot_and_leaves_nothing(slurm_jobs: SlurmJobs,
                                                    tmp_path: Path) -> None:
    """SIGINT once a pilot runs tasks (and a second one waits in the queue): the campaign
    stops, every pilot job leaves squeue, no process is left."""
    need_radical(slurm_jobs)
    cfg = {"templates": [{"name": "cpu", "site": "local-slurm", "nodes": 1, "runtime": 10,
                          "max_pilots": 2}],
           "pool": {"scale_out_after": 1},
           "phases": [[{"name": "w", "count": 20, "seconds": 30}]]}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / ".xdg"), "RADICAL_PROFILE": "FALSE",
           "RADICAL_DEFAULT_IFACE": "lo", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "client.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, str(CAMPAIGN), "cfg.json"], cwd=tmp_path,
                                env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while "PilotActive cpu." not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # its tasks have started
        assert len(jobs_in(tmp_path, slurm_jobs)) == 2  # one running, one queued behind it
        t0 = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(120)
        assert proc.returncode != 0
        assert "RESULT " not in log.read_text()
        settle(tmp_path, slurm_jobs, 60)
        print(f"stopped {time.monotonic() - t0:.1f} s after SIGINT")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for job in jobs_in(tmp_path, slurm_jobs):
            slurm_jobs.run(["scancel", job], check=False)
