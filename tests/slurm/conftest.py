"""Fixtures for tests that run against the real SLURM test cluster.

The cluster is started by ``scripts/slurm/up.sh`` (CI's ``.ci/run`` does that
before the tests).  These fixtures never start SLURM in CI; outside CI they
start it only when ``ASYNCFLOW_HPC_START_SLURM=1``.  When SLURM is not up the
tests are skipped, or fail under ``CI=true`` so that a broken cluster cannot
hide behind skips.

``slurm_jobs`` submits work in the test's ``tmp_path``, waits with a bound and
cancels, at teardown, every job the test submitted that is still queued.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
UP_SH = REPO_ROOT / "scripts" / "slurm" / "up.sh"

# Node states in which a node can run work ("*" suffix = not responding).
USABLE_STATES = {"idle", "mix", "alloc", "comp", "completing", "mixed", "allocated"}
# squeue states after which a job is gone for good.
FINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
    "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
}
# How long a helper waits for SLURM by default (2-core machine, tiny jobs).
DEFAULT_TIMEOUT = 60.0
CMD_TIMEOUT = 30.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slurm: needs the real SLURM test cluster (scripts/slurm/up.sh)"
    )


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    """Skip outside CI, fail inside it: CI must really exercise SLURM."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def job_env() -> dict[str, str]:
    """Environment for SLURM commands; srun/sbatch pass it on to the tasks."""
    env = dict(os.environ)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # OpenMPI refuses to run as root without both of these.
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


def run(cmd: Sequence[str], *, timeout: float = CMD_TIMEOUT, cwd: Path | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout,
            cwd=cwd, env=job_env(), stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(cmd)!r} did not finish in {timeout}s") from exc
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)!r} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def leftovers(folder: Path) -> list[str]:
    """Processes (other than this one) still working in ``folder`` (cwd inside it): agents,
    launchers, tasks."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:
            continue
        if (cwd == str(folder) or cwd.startswith(f"{folder}/")) and int(pid) != os.getpid():
            found.append(f"{pid} {cmd}")
    return found


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    nodes: tuple[str, ...]       # SLURM node names, e.g. ("vm",) or ("afnode1", ...)
    cpus: dict[str, int]         # configured CPUs per node
    partition: str

    @property
    def total_cpus(self) -> int:
        return sum(self.cpus.values())


def slurm_status() -> tuple[SlurmCluster | None, str]:
    """Return (cluster, "") when SLURM answers and has a usable node, else (None, why)."""
    for tool in ("scontrol", "sinfo", "squeue", "sbatch", "srun", "scancel"):
        if shutil.which(tool) is None:
            return None, f"{tool} not found: SLURM is not installed (run scripts/slurm/up.sh)"
    # `scontrol ping` answers at once; sinfo retries for ~9 s when nothing listens.
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True,
                              timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None, f"scontrol ping did not answer in {CMD_TIMEOUT}s (run scripts/slurm/up.sh)"
    if "is UP" not in ping.stdout:
        said = (ping.stdout + ping.stderr).strip().splitlines()
        first = said[0] if said else f"exit {ping.returncode}"
        return None, f"SLURM is not up: scontrol ping: {first} (run scripts/slurm/up.sh)"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N|%t|%c|%P"], capture_output=True, text=True,
            timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, f"sinfo did not answer in {CMD_TIMEOUT}s (is slurmctld up? run scripts/slurm/up.sh)"
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        last = err[-1] if err else ""
        return None, (f"SLURM is not up: sinfo exited {proc.returncode}: {last} "
                      "(run scripts/slurm/up.sh)")
    nodes: list[str] = []
    cpus: dict[str, int] = {}
    partition = ""
    states: list[str] = []
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        name, state, ncpu, part = parts
        states.append(f"{name}={state}")
        if state in USABLE_STATES:
            if name not in cpus:
                nodes.append(name)
            cpus[name] = int(ncpu) if ncpu.isdigit() else 1
            if part.endswith("*") or not partition:
                partition = part.rstrip("*")
    if not nodes:
        return None, f"SLURM answers but no node is usable: {', '.join(states) or 'no nodes'}"
    return SlurmCluster(tuple(nodes), cpus, partition), ""


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    cluster, why = slurm_status()
    if cluster is None and not in_ci() and os.environ.get("ASYNCFLOW_HPC_START_SLURM") == "1":
        proc = subprocess.run(["bash", str(UP_SH)], capture_output=True, text=True,
                              timeout=600, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            pytest.fail(f"scripts/slurm/up.sh failed ({proc.returncode}):\n"
                        f"{proc.stdout}\n{proc.stderr}", pytrace=False)
        cluster, why = slurm_status()
    if cluster is None:
        skip_or_fail(why)
    assert cluster is not None
    return cluster


class SlurmJobs:
    """Submit jobs for one test; every job is tracked and cancelled at teardown."""

    def __init__(self, cluster: SlurmCluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.job_ids: list[str] = []
        # srun steps are not given to us as ids up front: tag them by name.
        self.tag = f"afhpc-{uuid.uuid4().hex[:10]}"
        self._n = 0

    # Shared helpers, reachable from test modules without importing conftest.
    run = staticmethod(run)
    skip_or_fail = staticmethod(skip_or_fail)
    leftovers = staticmethod(leftovers)

    # -- submission -------------------------------------------------------
    def _script(self, body: str, suffix: str = "sh") -> Path:
        self._n += 1
        path = self.workdir / f"job{self._n}.{suffix}"
        text = body if body.startswith("#!") else "#!/bin/bash\n" + body
        path.write_text(text)
        path.chmod(0o755)
        return path

    def sbatch(self, body: str, *args: str) -> str:
        """Submit a batch script; output goes to <workdir>/<jobid>.out."""
        script = self._script(body)
        proc = run(
            ["sbatch", "--parsable", f"--job-name={self.tag}",
             f"--chdir={self.workdir}", f"--output={self.workdir}/%j.out",
             "--time=5", *args, str(script)],
            cwd=self.workdir,
        )
        job_id = proc.stdout.strip().split(";")[0]
        assert job_id.isdigit(), f"unexpected sbatch output: {proc.stdout!r}"
        self.job_ids.append(job_id)
        return job_id

    def qsub(self, body: str, *args: str) -> str:
        """Submit through the Torque-style qsub front-end (slurm-wlm-torque)."""
        if shutil.which("qsub") is None:
            skip_or_fail("qsub not found: slurm-wlm-torque is not installed")
        script = self._script(body, "pbs")
        proc = run(["qsub", *args, str(script)], cwd=self.workdir)
        match = re.search(r"\d+", proc.stdout)
        assert match, f"unexpected qsub output: {proc.stdout!r} {proc.stderr!r}"
        self.job_ids.append(match.group(0))
        return match.group(0)

    def srun(self, *args: str, timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess[str]:
        """Run srun in the foreground (bounded); returns the finished process."""
        return run(["srun", f"--job-name={self.tag}", "--time=5", *args],
                   cwd=self.workdir, timeout=timeout, check=False)

    # -- queries ------------------------------------------------------------
    @staticmethod
    def queue_state(job_id: str) -> str | None:
        """State as squeue lists it, or None once the job has left the queue."""
        proc = run(["squeue", "-h", "-j", job_id, "-o", "%T"], check=False)
        state = proc.stdout.strip()
        if proc.returncode != 0 or not state:
            return None       # squeue errors with "Invalid job id" once purged
        return state.splitlines()[0]

    @staticmethod
    def final_state(job_id: str) -> str:
        """JobState from scontrol (kept MinJobAge seconds after the end)."""
        proc = run(["scontrol", "show", "job", "-o", job_id], check=False)
        match = re.search(r"\bJobState=(\S+)", proc.stdout)
        return match.group(1) if match else "UNKNOWN"

    def wait_state(self, job_id: str, states: Iterable[str],
                   timeout: float = DEFAULT_TIMEOUT) -> str:
        wanted = set(states)
        deadline = time.monotonic() + timeout
        state: str | None = None
        while time.monotonic() < deadline:
            state = self.queue_state(job_id)
            if state in wanted:
                return state
            if state is None or state in FINAL_STATES:
                final = self.final_state(job_id)
                if final in wanted:
                    return final
                raise AssertionError(f"job {job_id} ended as {final} while waiting for {wanted}")
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not in {wanted} after {timeout}s (last: {state})")

    def wait(self, job_id: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait until the job has left squeue; return its final JobState."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.queue_state(job_id)
            if state is None or state in FINAL_STATES:
                # COMPLETING jobs are still listed; a final state is final.
                final = self.final_state(job_id)
                if final != "COMPLETING":
                    return final
            time.sleep(0.2)
        raise AssertionError(
            f"job {job_id} still queued after {timeout}s: "
            f"{run(['scontrol', 'show', 'job', job_id], check=False).stdout}"
        )

    def output(self, job_id: str) -> str:
        path = self.workdir / f"{job_id}.out"
        return path.read_text() if path.exists() else ""

    # -- cleanup --------------------------------------------------------------
    def cleanup(self, timeout: float = 30.0) -> list[str]:
        """Cancel what is still queued; return ids that would not leave."""
        live = [j for j in self.job_ids if self.queue_state(j) is not None]
        run(["scancel", f"--name={self.tag}"], check=False)
        if live:
            run(["scancel", *live], check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tagged = run(["squeue", "-h", f"--name={self.tag}", "-o", "%i"], check=False)
            live = [j for j in live if self.queue_state(j) is not None]
            if not live and not tagged.stdout.strip():
                return []
            time.sleep(0.2)
        return live


@pytest.fixture
def slurm_jobs(slurm_cluster: SlurmCluster, tmp_path: Path):
    jobs = SlurmJobs(slurm_cluster, tmp_path)
    yield jobs
    stuck = jobs.cleanup()
    if stuck:
        pytest.fail(f"jobs {stuck} still in squeue 30 s after scancel", pytrace=False)
