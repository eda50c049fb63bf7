"""The multi-node test cluster is what ``scripts/slurm/up.sh --nodes N`` promises.

One slurmd per node, each with its own pid file, log and spool folder (``%n`` in slurm.conf),
listening only on the node's own loopback address; node names resolve to those addresses;
jobs spread over the nodes; the CPUs declared per node are what the config says.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from multinode_helpers import MultiNodeJobs, SlurmCluster

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]


def config(jobs: MultiNodeJobs) -> dict[str, str]:
    out = jobs.run(["scontrol", "show", "config"]).stdout
    return {k.strip(): v.strip() for k, _, v in (x.partition("=") for x in out.splitlines()) if v}


def node_addr(jobs: MultiNodeJobs, node: str) -> str:
    out = jobs.run(["scontrol", "show", "node", "-o", node]).stdout
    match = re.search(r"\bNodeAddr=(\S+)", out)
    assert match, out
    return match.group(1)


def listening(port: int) -> set[str]:
    """IPv4 addresses with a TCP socket in LISTEN on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        hexaddr, hexport = local.split(":")
        if state == "0A" and int(hexport, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(hexaddr)[::-1]))
    return found


def test_each_node_has_its_own_daemon_files_and_address(
        mn_jobs: MultiNodeJobs, multinode_cluster: SlurmCluster) -> None:
    cfg = config(mn_jobs)
    nodes = multinode_cluster.nodes
    addrs = {n: node_addr(mn_jobs, n) for n in nodes}
    assert len(set(addrs.values())) == len(nodes), addrs
    for node, addr in addrs.items():
        assert addr.startswith("127."), addrs
        assert socket.gethostbyname(node) == addr, f"{node} does not resolve to {addr}"
    for key in ("SlurmdPidFile", "SlurmdLogFile", "SlurmdSpoolDir", "TmpFS"):
        assert "%n" in cfg[key], f"{key}={cfg[key]} is not per node"
    for node in nodes:
        pidfile = Path(cfg["SlurmdPidFile"].replace("%n", node))
        pid = int(pidfile.read_text().strip())
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "slurmd", pidfile
        assert Path(cfg["SlurmdLogFile"].replace("%n", node)).is_file()
        assert Path(cfg["SlurmdSpoolDir"].replace("%n", node)).is_dir()
    # every slurmd listens on its own node's address only (NoInAddrAny), never on 0.0.0.0
    assert "NoInAddrAny" in cfg["CommunicationParameters"], cfg["CommunicationParameters"]
    bound = listening(int(cfg["SlurmdPort"]))
    assert set(addrs.values()) <= bound and "0.0.0.0" not in bound, bound


def test_srun_spreads_over_all_nodes(mn_jobs: MultiNodeJobs,
                                     multinode_cluster: SlurmCluster) -> None:
    nodes = multinode_cluster.nodes
    proc = mn_jobs.srun("-N", str(len(nodes)), "-n", str(len(nodes)),
                        "bash", "-c", 'echo "$SLURMD_NODENAME $(hostname)"')
    assert proc.returncode == 0, proc.stderr
    seen = sorted(tuple(x.split()) for x in proc.stdout.splitlines())
    # one task per node; in the node's UTS namespace hostname is the node name
    assert seen == sorted((n, n) for n in nodes), proc.stdout


def test_batch_job_over_two_nodes_runs_steps_on_both(mn_jobs: MultiNodeJobs) -> None:
    job = mn_jobs.sbatch(
        "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=1\n"
        "echo batch=$SLURMD_NODENAME nodes=$SLURM_JOB_NODELIST\n"
        "srun bash -c 'echo step=$SLURMD_NODENAME'\n")
    state = mn_jobs.wait(job)
    out = mn_jobs.output(job)
    assert state == "COMPLETED", out
    steps = sorted(re.findall(r"^step=(\S+)$", out, re.M))
    assert len(steps) == 2 and len(set(steps)) == 2, out
