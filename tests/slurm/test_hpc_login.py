"""Login-node mode on the real SLURM: RADICAL-Pilot submits the pilot through sbatch.

``asyncflow-hpc run SCRIPT --site local-slurm`` writes the site's RP resource config
(``slurm://localhost/``) and RP's pilot becomes a real SLURM job. Ctrl-C (SIGINT) of such a
campaign must leave no job in squeue and no process behind. The RP tests cost ~30-110 s each;
the srun variant of the SIGINT test needs no RP.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import SlurmJobs

pytestmark = pytest.mark.slurm


def start_campaign(folder: Path, code: str, *args: str) -> subprocess.Popen[str]:
    """``asyncflow-hpc run`` of ``code`` in its own session (so teardown can end it all)."""
    script = folder / "campaign.py"
    script.write_text(code)
    env = {**os.environ, "XDG_CONFIG_HOME": str(folder / ".xdg"), "RADICAL_PROFILE": "FALSE",
           "RADICAL_DEFAULT_IFACE": "lo"}
    return subprocess.Popen([sys.executable, "-m", "asyncflow_hpc", "run", str(script), "-q", *args],
                            cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, stdin=subprocess.DEVNULL)


def jobs_in(folder: Path, slurm_jobs: SlurmJobs) -> dict[str, str]:
    """Jobs (id -> state) whose working directory is inside ``folder``."""
    out = slurm_jobs.run(["squeue", "-h", "-o", "%i %T %Z"], check=False).stdout
    jobs = {}
    for line in out.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and (parts[2] == str(folder) or parts[2].startswith(f"{folder}/")):
            jobs[parts[0]] = parts[1]
    return jobs


def settle(folder: Path, slurm_jobs: SlurmJobs, timeout: float = 30) -> None:
    """Wait (bounded) until no job and no process of the campaign is left; fail otherwise."""
    deadline = time.monotonic() + timeout
    while (jobs_in(folder, slurm_jobs) or slurm_jobs.leftovers(folder)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not jobs_in(folder, slurm_jobs), f"jobs left in squeue: {jobs_in(folder, slurm_jobs)}"
    assert not slurm_jobs.leftovers(folder), f"processes left behind: {slurm_jobs.leftovers(folder)}"


def end(proc: subprocess.Popen[str], folder: Path, slurm_jobs: SlurmJobs) -> None:
    """Teardown: the campaign's session and jobs, whatever the test did."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for job in jobs_in(folder, slurm_jobs):
        slurm_jobs.run(["scancel", job], check=False)


def need_radical(slurm_jobs: SlurmJobs) -> None:
    if importlib.util.find_spec("radical.pilot") is None:
        slurm_jobs.skip_or_fail("radical.pilot is not installed (pip install 'asyncflow-hpc[radical]')")
    if shutil.which("ping") or shutil.which("dig"):
        pytest.fail("ping/dig are installed: RADICAL-Pilot's bootstrap would contact the internet")


CHAIN = """
import asyncio
from asyncflow_hpc import WorkflowEngine

async def main():
    async with WorkflowEngine.create() as flow:
        @flow.executable_task
        def step(prev, i):
            return ["echo", f"{prev.strip()}-{i}"]

        @flow.function_task
        def shout(text):
            return text.strip().upper()

        a = step("x", 1)
        b = step(a, 2)
        c = [step(b, i) for i in (3, 4)]
        print("LOGIN RESULT", [(await f).strip() for f in c], await shout(await b), flush=True)

asyncio.run(main())
"""


@pytest.mark.timeout(400)
def test_login_node_pilot_is_a_slurm_job(slurm_jobs: SlurmJobs) -> None:
    need_radical(slurm_jobs)
    folder = slurm_jobs.workdir
    t0 = time.monotonic()
    # the site's own options (directives, exclusive) reach the pilot's job from a login node
    (folder / "sites.toml").write_text(
        '[sites.login-test]\nscheduler = "slurm"\nwalltime = 10\nexclusive = true\n'
        'directives = ["--comment=afhpc-login-directive"]\n')
    proc = start_campaign(folder, CHAIN, "--site", "login-test", "--site-file",
                          str(folder / "sites.toml"), "--runtime", "10")
    seen: set[tuple[str, str]] = set()  # (job id, state) pairs ever listed
    comments: dict[str, str] = {}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            jobs = jobs_in(folder, slurm_jobs)
            seen.update(jobs.items())
            for job in jobs:
                out = slurm_jobs.run(["squeue", "-h", "-j", job, "-o", "%k|%H"],
                                     check=False).stdout.strip()
                if out:
                    comments[job] = out
            time.sleep(1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        out, _ = proc.communicate(timeout=330)
    finally:
        stop.set()
        watcher.join(5)
        end(proc, folder, slurm_jobs)
    assert proc.returncode == 0, out
    assert "LOGIN RESULT ['x-1-2-3', 'x-1-2-4'] X-1-2" in out, out
    pilots = {job for job, _ in seen}
    assert len(pilots) == 1, f"expected exactly one pilot job in squeue, saw {sorted(seen)}"
    assert any(state == "RUNNING" for _, state in seen), f"pilot job never RUNNING: {sorted(seen)}"
    assert [c.split("|")[0] for c in comments.values()] == ["afhpc-login-directive"], comments
    configs = list(folder.glob("asyncflow-work/*/config/.radical/pilot/configs/"
                               "resource_afhpc_login_test.json"))
    assert len(configs) == 1 and "slurm://localhost/" in configs[0].read_text(), configs
    settle(folder, slurm_jobs)
    # the agent in the batch job made /tmp/<session id> on its node (this machine): gone again
    sessions = [p.name for p in folder.glob("asyncflow-work/*/sandbox/radical.pilot.sandbox/rp.session.*")]
    assert sessions, "no RP session sandbox found"
    assert not [s for s in sessions if (Path("/tmp") / s).exists()], sessions
    print(f"login-node campaign, pilot job {pilots}: {time.monotonic() - t0:.1f} s")


SLEEPY = """
import asyncio, sys
from asyncflow_hpc import WorkflowEngine

async def main():
    async with WorkflowEngine.create() as flow:
        @flow.executable_task
        def nap(i, task_description={"shell": True}):
            return f"touch started.{i}; exec {sys.argv[1] if len(sys.argv) > 1 else ''} sleep 300"

        await asyncio.gather(*[nap(i) for i in range(2)])

asyncio.run(main())
"""


def interrupt_when_started(proc: subprocess.Popen[str], folder: Path, timeout: float,
                           sig: int = signal.SIGINT) -> str:
    deadline = time.monotonic() + timeout
    while not list(folder.glob("**/started.*")):
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.communicate(timeout=10)[0] if proc.poll() is not None else "(still running)"
            raise AssertionError(f"tasks never started: {out}")
        time.sleep(0.5)
    time.sleep(1)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=90)
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)],
                         ids=["SIGINT", "SIGTERM"])
def test_sigint_cancels_srun_jobs_of_local_tasks(slurm_jobs: SlurmJobs, sig: int, code: int) -> None:
    """Local backend, tasks that are srun jobs: Ctrl-C or SIGTERM leaves no job and no process."""
    folder = slurm_jobs.workdir
    proc = start_campaign(folder, SLEEPY, "--backend", "local", "--",
                          f"srun --job-name={slurm_jobs.tag} --time=5")
    try:
        deadline = time.monotonic() + 60
        while len(jobs_in(folder, slurm_jobs)) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "srun jobs never appeared"
            time.sleep(0.3)
        out = interrupt_when_started(proc, folder, 60, sig)
    finally:
        end(proc, folder, slurm_jobs)
    assert proc.returncode in (code, 128 - code), out  # SIGTERM: re-raised after the shutdown
    settle(folder, slurm_jobs)


@pytest.mark.timeout(400)
def test_sigint_cancels_pilot_job(slurm_jobs: SlurmJobs) -> None:
    """RADICAL-Pilot from a login node: Ctrl-C while tasks run cancels the pilot's SLURM job."""
    need_radical(slurm_jobs)
    folder = slurm_jobs.workdir
    t0 = time.monotonic()
    proc = start_campaign(folder, SLEEPY, "--site", "local-slurm", "--runtime", "10")
    try:
        out = interrupt_when_started(proc, folder, 300)
    finally:
        end(proc, folder, slurm_jobs)
    assert proc.returncode != 0, out
    settle(folder, slurm_jobs, timeout=60)
    print(f"SIGINT with a running pilot: clean after {time.monotonic() - t0:.1f} s")


DOOMED = """
import asyncio
from asyncflow_hpc import WorkflowEngine

async def main():
    async with WorkflowEngine.create() as flow:
        @flow.executable_task
        def nap(i, task_description={"shell": True}):
            return f"touch started.{i}; exec sleep 300"

        @flow.function_task
        def after(text):
            return text

        naps = [nap(i) for i in range(2)]
        futures = [*naps, after(naps[0])]
        for result in await asyncio.gather(*futures, return_exceptions=True):
            print("TASK OUTCOME", type(result).__name__, str(result).splitlines()[0], flush=True)

asyncio.run(main())
"""


@pytest.mark.timeout(400)
def test_external_scancel_of_pilot_fails_futures(slurm_jobs: SlurmJobs) -> None:
    """The pilot's SLURM job cancelled from outside (scancel): every future fails with an error
    naming the pilot, the dependent fails as a dependency failure, nothing hangs, nothing is
    left in squeue or in the process table."""
    need_radical(slurm_jobs)
    folder = slurm_jobs.workdir
    t0 = time.monotonic()
    proc = start_campaign(folder, DOOMED, "--site", "local-slurm", "--runtime", "10")
    try:
        deadline = time.monotonic() + 300
        while len(list(folder.glob("**/started.*"))) < 2:
            assert proc.poll() is None, proc.communicate(timeout=10)[0]
            assert time.monotonic() < deadline, "tasks never started"
            time.sleep(0.5)
        pilots = jobs_in(folder, slurm_jobs)
        assert len(pilots) == 1, f"expected one pilot job, got {pilots}"
        t_cancel = time.monotonic()
        slurm_jobs.run(["scancel", *pilots])
        out, _ = proc.communicate(timeout=150)
        reacted = time.monotonic() - t_cancel
    finally:
        end(proc, folder, slurm_jobs)
    outcomes = [line for line in out.splitlines() if line.startswith("TASK OUTCOME")]
    assert len(outcomes) == 3, out
    for line in outcomes[:2]:
        assert re.match(r"TASK OUTCOME PilotFailedError pilot pilot\.\d+ ended in state "
                        r"(FAILED|CANCELED)", line), out
    assert outcomes[2].startswith("TASK OUTCOME DependencyFailureError"), out
    assert proc.returncode == 0, out
    settle(folder, slurm_jobs, timeout=60)
    print(f"external scancel: futures failed {reacted:.1f} s after scancel, "
          f"{time.monotonic() - t0:.1f} s in all")


def afhpc(folder: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(folder / ".xdg")}
    return subprocess.run([sys.executable, "-m", "asyncflow_hpc", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.timeout(120)
def test_sites_check_and_doctor_against_slurm(slurm_jobs: SlurmJobs) -> None:
    """'sites check' asks the real scheduler (partition, sbatch --test-only); 'doctor' run as
    a job step sees the allocation."""
    folder = slurm_jobs.workdir
    partition = slurm_jobs.cluster.partition
    (folder / "sites.toml").write_text(
        f'[sites.good]\nscheduler = "slurm"\npartition = "{partition}"\n\n'
        '[sites.bad]\nscheduler = "slurm"\npartition = "nosuchpartition"\n')
    good = afhpc(folder, "sites", "check", "good", "--site-file", "sites.toml")
    assert good.returncode == 0, good.stdout + good.stderr
    assert f"ok    partition {partition}" in good.stdout and "sbatch --test-only" in good.stdout
    bad = afhpc(folder, "sites", "check", "bad", "--site-file", "sites.toml")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL  partition nosuchpartition" in bad.stdout
    assert not jobs_in(folder, slurm_jobs)  # --test-only queued nothing
    step = slurm_jobs.srun("-n1", sys.executable, "-m", "asyncflow_hpc", "doctor", "--json")
    assert step.returncode == 0, step.stderr
    alloc = json.loads(step.stdout)["allocation"]
    assert alloc["scheduler"] == "slurm" and alloc["nodes"] and alloc["cpus_per_node"] >= 1
