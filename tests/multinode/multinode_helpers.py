"""Helpers of the multi-node tests: the cluster they need, jobs cleaned up at teardown,
skips (see conftest.py for what the cluster is and when the tests skip or fail)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

_SLURM_CONFTEST = Path(__file__).resolve().parents[1] / "slurm" / "conftest.py"
_spec = importlib.util.spec_from_file_location("afhpc_slurm_fixtures", _SLURM_CONFTEST)
assert _spec is not None and _spec.loader is not None
slurm = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = slurm  # dataclasses look their module up by name
_spec.loader.exec_module(slurm)

SlurmCluster = slurm.SlurmCluster
SlurmJobs = slurm.SlurmJobs
in_ci = slurm.in_ci
skip_or_fail = slurm.skip_or_fail
run = slurm.run

#: what scripts/test.sh starts for this folder
WANT_NODES = 3
UP_HINT = "run: bash scripts/slurm/down.sh; bash scripts/slurm/up.sh --nodes 3 --cpus-per-node 2"


def rp_env(folder: Path) -> dict[str, str]:
    """Environment for a campaign client: RP quiet and on loopback, no user site files."""
    env = slurm.job_env()
    env.update({"XDG_CONFIG_HOME": str(folder / ".xdg"), "RADICAL_PROFILE": "FALSE",
                "RADICAL_DEFAULT_IFACE": "lo", "PYTHONUNBUFFERED": "1"})
    for key in [k for k in env if k.startswith("ASYNCFLOW_HPC_")]:
        del env[key]  # the test says what it wants
    return env


def need_radical() -> None:
    if importlib.util.find_spec("radical.pilot") is None:
        skip_or_fail("radical.pilot is not installed (pip install 'asyncflow-hpc[radical]')")
    if shutil.which("ping") or shutil.which("dig"):
        pytest.fail("ping/dig are installed: RADICAL-Pilot's bootstrap would contact the internet")


def need_mpi4py() -> None:
    if importlib.util.find_spec("mpi4py") is None:
        skip_or_fail(f"mpi4py is not importable in {sys.executable} (pip install mpi4py)")


def need_nodes(cluster: SlurmCluster, count: int, cpus: int = 1) -> None:
    """Skip (fail in CI) unless ``count`` usable nodes with ``cpus`` CPUs each are there."""
    fit = [n for n in cluster.nodes if cluster.cpus[n] >= cpus]
    if len(fit) < count:
        skip_or_fail(f"needs {count} nodes with >= {cpus} CPUs, SLURM has "
                     f"{', '.join(f'{n}={cluster.cpus[n]}' for n in cluster.nodes)}: {UP_HINT}")


class MultiNodeJobs(SlurmJobs):
    """``SlurmJobs`` that also cleans up after pilots, campaigns and downed nodes."""

    def __init__(self, cluster: SlurmCluster, workdir: Path) -> None:
        super().__init__(cluster, workdir)
        self.downed: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def jobs_in_folder(self) -> dict[str, str]:
        """Jobs (id -> state) whose working directory is inside this test's folder."""
        out = run(["squeue", "-h", "-o", "%i %T %Z"], check=False).stdout
        found = {}
        for line in out.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and (parts[2] == str(self.workdir)
                                    or parts[2].startswith(f"{self.workdir}/")):
                found[parts[0]] = parts[1]
        return found

    def node_down(self, node: str, reason: str = "afhpc-multinode-test") -> None:
        """``scontrol update state=down``; the node is resumed at teardown."""
        self.downed.append(node)
        run(["scontrol", "update", f"nodename={node}", "state=down", f"reason={reason}"])

    def node_state(self, node: str) -> str:
        # one line per partition the node is in (debug, and cpu or gpu): the same state
        states = run(["sinfo", "-h", "-N", "-n", node, "-o", "%t"], check=False).stdout.split()
        return states[0] if len(set(states)) == 1 else " ".join(states)

    def popen(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[str]:
        """Start a client (campaign) in its own session, output to ``log``; ended at teardown."""
        fh = log.open("w")
        proc = subprocess.Popen(argv, cwd=self.workdir, env=env, stdout=fh,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                stdin=subprocess.DEVNULL)
        fh.close()
        self.procs.append(proc)
        return proc

    def leftovers(self) -> list[str]:
        """Processes (not this one) whose working directory is inside the test's folder."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            if int(pid) == os.getpid():
                continue
            try:
                cwd = os.readlink(f"/proc/{pid}/cwd")
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cwd == str(self.workdir) or cwd.startswith(f"{self.workdir}/"):
                found.append(f"{pid} {cmd[:160]}")
        return found

    def settle(self, timeout: float = 60) -> None:
        """Wait (bounded) until no job and no process of the test is left; fail otherwise."""
        deadline = time.monotonic() + timeout
        while (self.jobs_in_folder() or self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not self.jobs_in_folder(), f"jobs left in squeue: {self.jobs_in_folder()}"
        assert not self.leftovers(), f"processes left behind: {self.leftovers()}"

    def teardown(self) -> list[str]:
        problems: list[str] = []
        for proc in self.procs:
            if proc.poll() is None:
                problems.append(f"client {proc.args!r} still running at teardown: killed")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(10)
        for job in self.jobs_in_folder():
            self.job_ids.append(job)
        stuck = self.cleanup()
        if stuck:
            problems.append(f"jobs {stuck} still in squeue 30 s after scancel")
        for node in dict.fromkeys(self.downed):
            run(["scontrol", "update", f"nodename={node}", "state=resume"], check=False)
        deadline = time.monotonic() + 30
        for node in dict.fromkeys(self.downed):
            while self.node_state(node) not in slurm.USABLE_STATES and time.monotonic() < deadline:
                time.sleep(0.5)
            if self.node_state(node) not in slurm.USABLE_STATES:
                problems.append(f"node {node} did not come back: {self.node_state(node)}")
        deadline = time.monotonic() + 30
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = self.leftovers()
        if left:
            problems.append(f"processes left behind: {left}")
            for line in left:  # do not let them disturb the next test
                try:
                    os.kill(int(line.split()[0]), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        return problems
