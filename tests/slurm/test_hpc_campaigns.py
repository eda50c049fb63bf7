"""Campaigns inside allocations on the real SLURM: batch templates through sbatch and qsub.

``asyncflow-hpc submit`` renders ``batch_templates/<scheduler>/campaign.sh`` and submits it;
the job runs ``asyncflow-hpc run SCRIPT --in-allocation``. Results are read from the job's
output. PBS runs through SLURM's Torque-style ``qsub`` (slurm-wlm-torque): no real PBS server
exists here. Tests that start a RADICAL-Pilot agent inside the job cost ~45-60 s each.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import SlurmCluster, SlurmJobs

pytestmark = pytest.mark.slurm
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def afhpc(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the asyncflow-hpc CLI (as the installed module) and return the finished process."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(cwd / ".xdg")}  # no user site files
    return subprocess.run([sys.executable, "-m", "asyncflow_hpc", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def submit(slurm_jobs: SlurmJobs, *args: str) -> str:
    """``asyncflow-hpc submit ...`` in the test's folder; the job is cancelled at teardown."""
    proc = afhpc("submit", "--campaign-dir", str(slurm_jobs.workdir), *args, cwd=slurm_jobs.workdir)
    assert proc.returncode == 0, f"submit failed:\n{proc.stdout}\n{proc.stderr}"
    job_id = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+", job_id), proc.stdout
    slurm_jobs.job_ids.append(job_id)
    return job_id


def sleepy_campaign(folder: Path, nap: str) -> Path:
    """A campaign (``folder/sleepy.py``) whose two executable tasks ``nap`` (the decorated
    function's lines) sleep for minutes."""
    camp = folder / "sleepy.py"
    camp.write_text(
        "import asyncio\nfrom asyncflow_hpc import WorkflowEngine\n"
        "async def main():\n"
        "    async with WorkflowEngine.create() as flow:\n"
        "        @flow.executable_task\n"
        f"{nap}"
        "        await asyncio.gather(*[nap(i) for i in range(2)])\n"
        "asyncio.run(main())\n")
    return camp


def wait_no_leftovers(jobs: SlurmJobs, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while jobs.leftovers(jobs.workdir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not jobs.leftovers(jobs.workdir), f"processes left behind: {jobs.leftovers(jobs.workdir)}"


def job_output(folder: Path, job_name: str) -> str:
    path = folder / f"{job_name}.out"
    return path.read_text() if path.exists() else f"(no {path})"


def need_radical(slurm_jobs: SlurmJobs) -> None:
    if importlib.util.find_spec("radical.pilot") is None:
        slurm_jobs.skip_or_fail("radical.pilot is not installed (pip install 'asyncflow-hpc[radical]')")
    if shutil.which("ping") or shutil.which("dig"):
        pytest.fail("ping/dig are installed: RADICAL-Pilot's bootstrap would contact the internet")


def pbs_site_file(folder: Path, cluster: SlurmCluster) -> Path:
    """A PBS site for the test cluster (cores per node as SLURM declares them)."""
    path = folder / "sites.toml"
    cores = min(cluster.cpus.values())
    path.write_text(f'[sites.testpbs]\nscheduler = "pbs"\ncores_per_node = {cores}\n'
                    'launcher = "mpiexec"\nwalltime = 10\n')
    return path


# ------------------------------------------------------------------------ SLURM, in allocation
@pytest.mark.timeout(180)
def test_sbatch_template_campaign_26_tasks(slurm_jobs: SlurmJobs) -> None:
    """26 tasks (executables and functions, with dependencies) inside one sbatch job."""
    t0 = time.monotonic()
    job = submit(slurm_jobs, str(EXAMPLES / "allocation_campaign.py"), "--site", "local-slurm",
                 "--backend", "local", "--runtime", "5", "--job-name", "afhpc-alloc26",
                 "--", "--samples", "6")
    state = slurm_jobs.wait(job, timeout=150)
    out = job_output(slurm_jobs.workdir, "afhpc-alloc26")
    assert state == "COMPLETED", out
    assert (f"CAMPAIGN RESULT tasks=26 job={job} report totals=6,10,15,21,28,36 "
            "checks_ok=True n=6") in out, out
    assert "campaign exited with status 0" in out
    assert (slurm_jobs.workdir / "tmp").is_dir()  # TMPDIR inside the campaign
    wait_no_leftovers(slurm_jobs)
    print(f"in-allocation campaign, local backend: {time.monotonic() - t0:.1f} s")


@pytest.mark.timeout(300)
def test_sbatch_template_radical_mpi4py_two_ranks(slurm_jobs: SlurmJobs) -> None:
    """The pilot starts by fork inside the job (no second batch job); the 2-rank mpi4py task
    is launched with srun and reports both ranks."""
    need_radical(slurm_jobs)
    if importlib.util.find_spec("mpi4py") is None:
        slurm_jobs.skip_or_fail("mpi4py is not installed (pip install mpi4py)")
    t0 = time.monotonic()
    job = submit(slurm_jobs, str(EXAMPLES / "mpi4py_campaign.py"), "--site", "local-slurm",
                 "--backend", "radical", "--runtime", "8", "--job-name", "afhpc-mpi")
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    while slurm_jobs.queue_state(job) not in (None, "COMPLETED", "FAILED", "CANCELLED"):
        # jobs working in this test's folder: a pilot batch job would show up here
        listed = slurm_jobs.run(["squeue", "-h", "-o", "%i %Z"], check=False).stdout
        seen.update(i for i, _, wd in (x.partition(" ") for x in listed.splitlines())
                    if wd.startswith(str(slurm_jobs.workdir)))
        assert time.monotonic() < deadline, job_output(slurm_jobs.workdir, "afhpc-mpi")
        time.sleep(1)
    state = slurm_jobs.wait(job, timeout=30)
    out = job_output(slurm_jobs.workdir, "afhpc-mpi")
    assert state == "COMPLETED", out
    assert "MPI RESULT ranks=2 rank=0 size=2 sum=3; rank=1 size=2 sum=3" in out, out
    assert seen <= {job}, f"a second batch job appeared: {seen}"
    launch = list(slurm_jobs.workdir.glob("**/pilot.0000/task.*/task.*.launch.sh"))
    assert launch and any("srun" in p.read_text() and "--ntasks 2" in p.read_text() for p in launch)
    wait_no_leftovers(slurm_jobs)
    print(f"in-allocation campaign, RADICAL-Pilot + srun: {time.monotonic() - t0:.1f} s")


@pytest.mark.timeout(120)
def test_sbatch_template_local_backend_mpi4py(slurm_jobs: SlurmJobs) -> None:
    """Without RADICAL-Pilot (--backend local) a 2-rank task inside the job runs with mpirun,
    which takes its slots from the SLURM allocation."""
    if importlib.util.find_spec("mpi4py") is None or shutil.which("mpirun") is None:
        slurm_jobs.skip_or_fail("mpi4py or mpirun is missing")
    job = submit(slurm_jobs, str(EXAMPLES / "mpi4py_campaign.py"), "--site", "local-slurm",
                 "--backend", "local", "--runtime", "3", "--job-name", "afhpc-lmpi")
    state = slurm_jobs.wait(job, timeout=100)
    out = job_output(slurm_jobs.workdir, "afhpc-lmpi")
    assert state == "COMPLETED", out
    assert "MPI RESULT ranks=2 rank=0 size=2 sum=3; rank=1 size=2 sum=3" in out, out
    wait_no_leftovers(slurm_jobs)


@pytest.mark.timeout(120)
def test_usr1_warning_stops_campaign_cleanly(slurm_jobs: SlurmJobs) -> None:
    """SLURM's early warning (--signal=B:USR1@N) reaches the campaign as SIGTERM: it cancels
    its tasks (their processes die) and the job ends long before its time limit."""
    camp = sleepy_campaign(slurm_jobs.workdir, "        def nap(i): return 'sleep 300'\n"
                                               "        print('CAMPAIGN STARTED', flush=True)\n")
    job = submit(slurm_jobs, str(camp), "--site", "local-slurm", "--backend", "local",
                 "--runtime", "10", "--job-name", "afhpc-usr1")
    slurm_jobs.wait_state(job, {"RUNNING"})
    deadline = time.monotonic() + 60
    while "CAMPAIGN STARTED" not in job_output(slurm_jobs.workdir, "afhpc-usr1"):
        assert time.monotonic() < deadline, job_output(slurm_jobs.workdir, "afhpc-usr1")
        time.sleep(0.3)
    time.sleep(1)  # the sleeps are running
    slurm_jobs.run(["scancel", "--batch", "--signal=USR1", job])
    state = slurm_jobs.wait(job, timeout=60)
    out = job_output(slurm_jobs.workdir, "afhpc-usr1")
    assert "USR1 received, stopping the campaign" in out, out
    assert "SIGTERM" in out and "campaign exited with status" in out, out
    assert state in ("COMPLETED", "FAILED"), out
    wait_no_leftovers(slurm_jobs)


@pytest.mark.timeout(300)
def test_scancel_of_radical_campaign_in_allocation_leaves_nothing(slurm_jobs: SlurmJobs) -> None:
    """A plain scancel of a job whose campaign runs a pilot (agent, srun steps, sleeping tasks):
    SLURM's SIGTERM reaches the campaign and the agent; no job and no process survive."""
    need_radical(slurm_jobs)
    camp = sleepy_campaign(slurm_jobs.workdir,
                           "        def nap(i, task_description={'shell': True}):\n"
                           "            return f'touch started.{i}; exec sleep 300'\n")
    job = submit(slurm_jobs, str(camp), "--site", "local-slurm", "--backend", "radical",
                 "--runtime", "8", "--job-name", "afhpc-scancel")
    deadline = time.monotonic() + 240
    while len(list(slurm_jobs.workdir.glob("**/started.*"))) < 2:
        assert slurm_jobs.queue_state(job) in ("PENDING", "RUNNING", "CONFIGURING"), \
            job_output(slurm_jobs.workdir, "afhpc-scancel")
        assert time.monotonic() < deadline, job_output(slurm_jobs.workdir, "afhpc-scancel")
        time.sleep(1)
    slurm_jobs.run(["scancel", job])
    assert slurm_jobs.wait(job, timeout=60) == "CANCELLED"
    wait_no_leftovers(slurm_jobs, timeout=30)
    out = job_output(slurm_jobs.workdir, "afhpc-scancel")
    assert "received SIGTERM" in out, out


# ------------------------------------------------------------------------ PBS (Torque qsub)
@pytest.mark.timeout(180)
def test_qsub_template_campaign(slurm_jobs: SlurmJobs, slurm_cluster: SlurmCluster) -> None:
    """The PBS template, submitted with the Torque-style qsub, runs the 26-task campaign."""
    if shutil.which("qsub") is None:
        slurm_jobs.skip_or_fail("qsub not found: slurm-wlm-torque is not installed")
    sites = pbs_site_file(slurm_jobs.workdir, slurm_cluster)
    job = submit(slurm_jobs, str(EXAMPLES / "allocation_campaign.py"), "--site", "testpbs",
                 "--site-file", str(sites), "--backend", "local", "--runtime", "5",
                 "--job-name", "afhpc-pbs26")
    state = slurm_jobs.wait(job, timeout=150)
    out = job_output(slurm_jobs.workdir, "afhpc-pbs26")
    assert state == "COMPLETED", out
    assert "CAMPAIGN RESULT tasks=26" in out and "checks_ok=True n=6" in out, out
    wait_no_leftovers(slurm_jobs)


@pytest.mark.timeout(300)
def test_qsub_template_radical_mpiexec(slurm_jobs: SlurmJobs, slurm_cluster: SlurmCluster) -> None:
    """PBS template + RADICAL-Pilot inside the job: tasks launch with mpiexec (site launcher)."""
    need_radical(slurm_jobs)
    if shutil.which("qsub") is None or importlib.util.find_spec("mpi4py") is None:
        slurm_jobs.skip_or_fail("qsub (slurm-wlm-torque) or mpi4py is missing")
    if min(slurm_cluster.cpus.values()) < 2:
        pytest.skip("needs a node with 2 CPUs for the 2-rank task")
    sites = pbs_site_file(slurm_jobs.workdir, slurm_cluster)
    job = submit(slurm_jobs, str(EXAMPLES / "mpi4py_campaign.py"), "--site", "testpbs",
                 "--site-file", str(sites), "--backend", "radical", "--runtime", "8",
                 "--job-name", "afhpc-pbsrp")
    state = slurm_jobs.wait(job, timeout=270)
    out = job_output(slurm_jobs.workdir, "afhpc-pbsrp")
    assert state == "COMPLETED", out
    assert "MPI RESULT ranks=2 rank=0 size=2 sum=3; rank=1 size=2 sum=3" in out, out
    launch = list(slurm_jobs.workdir.glob("**/pilot.0000/task.*/task.*.launch.sh"))
    assert any("mpiexec -np 2" in p.read_text() for p in launch)
    wait_no_leftovers(slurm_jobs)


@pytest.mark.timeout(120)
def test_pbs_resource_config_made_inside_qsub_job(slurm_jobs: SlurmJobs,
                                                  slurm_cluster: SlurmCluster) -> None:
    """Inside a qsub job the generated RP config sees the allocation and passes RP's schema."""
    sites = pbs_site_file(slurm_jobs.workdir, slurm_cluster)
    job = slurm_jobs.qsub(
        "#!/bin/bash\n#PBS -N afhpc_cfg\n#PBS -l nodes=1:ppn=1\n#PBS -l walltime=00:02:00\n"
        f"export ASYNCFLOW_HPC_SITE=testpbs ASYNCFLOW_HPC_SITE_FILE={sites} "
        "ASYNCFLOW_HPC_IN_ALLOCATION=1\n"
        f"{sys.executable} -c 'import json; from asyncflow_hpc.hpc.resources import "
        "radical_backend_options as r; print(\"OPTS\", json.dumps(r()))'\n",
        "-o", str(slurm_jobs.workdir / "cfg.out"))
    assert slurm_jobs.wait(job) == "COMPLETED"
    line = next(x for x in (slurm_jobs.workdir / "cfg.out").read_text().splitlines()
                if x.startswith("OPTS "))
    opts = json.loads(line[5:])
    assert opts["resource"] == "afhpc_testpbs.allocation" and opts["nodes"] == 1
    entry = opts["site_config"]["afhpc_testpbs.allocation"]
    assert entry["schemas"]["allocation"]["job_manager_endpoint"] == "fork://localhost/"
    # Torque's qsub is SLURM underneath: the agent must read the allocation the SLURM way
    assert entry["resource_manager"] == "SLURM"
    assert entry["launch_methods"]["order"] == ["MPIEXEC", "FORK"]
    from asyncflow_hpc.hpc.resources import validate_resource_entry
    validate_resource_entry(entry)
