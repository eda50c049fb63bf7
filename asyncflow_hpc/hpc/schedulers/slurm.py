"""SLURM: ``sbatch``, ``squeue``/``scontrol``, ``scancel``, ``sinfo``, and ``SLURM_*``."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import Allocation, Scheduler, run

__all__ = ["Slurm", "expand_hostlist", "gpus_on_node", "leading_int", "parse_duration"]


class Slurm(Scheduler):
    name = "slurm"
    commands = ("sbatch", "srun", "squeue", "scancel", "sinfo")
    variables = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_JOB_NUM_NODES",
                 "SLURM_CPUS_ON_NODE", "SLURM_JOB_CPUS_PER_NODE", "SLURM_JOB_PARTITION",
                 "SLURM_NTASKS")

    def submit_argv(self, script: Path, output: str | None = None,
                    extra: Sequence[str] = ()) -> list[str]:
        # the script's #SBATCH --output says where the output goes
        return ["sbatch", "--parsable", *extra, str(script)]

    def job_state(self, job: str) -> str | None:
        code, out, _ = run(["squeue", "-h", "-j", job, "-o", "%T"], 60)
        states = out.strip().splitlines()
        if code == 0 and states:
            return states[0]
        _, out, _ = run(["scontrol", "show", "job", "-o", job], 60)
        match = re.search(r"\bJobState=(\S+)", out)
        return match.group(1) if match else None

    def cancel(self, job: str) -> None:
        run(["scancel", job], 60)

    def time_left_minutes(self, job: str) -> int | None:
        if shutil.which("squeue") is None:
            return None
        code, out, _ = run(["squeue", "-h", "-j", job, "-o", "%L"], 10)
        return parse_duration(out.strip()) if code == 0 else None

    def cores_per_node(self, partition: str | None = None) -> int | None:
        if shutil.which("sinfo") is None:
            return None
        code, out, _ = run(["sinfo", "-h", "-N", "-o", "%c",
                            *(["-p", partition] if partition else [])], 15)
        counts = [int(x) for x in out.split() if x.isdigit()]
        return min(counts) if code == 0 and counts else None

    def node_count(self, partition: str | None = None) -> int | None:
        if shutil.which("sinfo") is None:
            return None
        # without -p, sinfo lists every partition: count the default one's nodes (marked '*')
        code, out, _ = run(["sinfo", "-h", "-N", "-o", "%N %P",
                            *(["-p", partition] if partition else [])], 15)
        if code != 0:
            return None
        nodes = {line.split()[0] for line in out.splitlines()
                 if len(line.split()) == 2 and (partition or line.split()[1].endswith("*"))}
        return len(nodes)

    def check(self, site: Any) -> list[tuple[str, str, str]]:
        rows = []
        if site.partition:
            code, out, err = run(["sinfo", "-h", "-p", site.partition, "-o", "%P %a %D"])
            out = (out + err).strip()
            rows.append(("ok" if code == 0 and out else "FAIL", f"partition {site.partition}",
                         out or "sinfo lists no such partition"))
        else:
            rows.append(("skip", "partition", "none set: the cluster's default partition is used"))
        argv = ["sbatch", "--test-only", "--nodes=1", "--time=1", "--wrap=true"]
        for flag, value in (("--partition", site.partition), ("--account", site.account),
                            ("--qos", site.qos), ("--reservation", site.reservation)):
            if value:
                argv.append(f"{flag}={value}")
        code, out, err = run(argv)
        out = (out + err).strip()
        what = f"account {site.account}" if site.account else "test submission"
        rows.append(("ok" if code == 0 else "FAIL", f"{what} (sbatch --test-only)",
                     out.splitlines()[-1] if out else ""))
        return rows

    def controller_up(self) -> bool | None:
        if shutil.which("scontrol") is None:
            return None
        _, out, err = run(["scontrol", "ping"], 10)
        return "is UP" in out + err

    def allocation(self, env: Mapping[str, str]) -> Allocation | None:
        job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not (job and nodelist):
            return None
        cpus = leading_int(env.get("SLURM_CPUS_ON_NODE")) or \
            leading_int(env.get("SLURM_JOB_CPUS_PER_NODE"))
        return Allocation("slurm", job, tuple(expand_hostlist(nodelist)), cpus,
                          gpus_on_node(env), env.get("SLURM_JOB_PARTITION") or None,
                          env.get("PBS_JOBID") or None)


def leading_int(value: str | None) -> int | None:
    """The first number in ``value`` (``"2(x3),1"`` -> 2: the first node's count), or None."""
    if not value:
        return None
    match = re.match(r"\s*(\d+)", value)
    return int(match.group(1)) if match else None


def gpus_on_node(env: Mapping[str, str]) -> int:
    """GPUs this job has on a node: SLURM's count, else the visible devices."""
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        value = leading_int(env.get(key))
        if value is not None:
            return value
    visible = env.get("CUDA_VISIBLE_DEVICES") or env.get("ROCR_VISIBLE_DEVICES")
    return len([d for d in visible.split(",") if d]) if visible else 0


def expand_hostlist(text: str) -> list[str]:
    """SLURM's compressed host list (``node[01-03,7],gpu1``) as a list of names."""
    out: list[str] = []
    for part in _split_top(text.strip()):
        out.extend(_expand_one(part))
    return out


def _split_top(text: str) -> list[str]:
    """Split at commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_one(name: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", name)
    if not match:
        return [name]
    head, tail = name[:match.start()], name[match.end():]
    out: list[str] = []
    for item in match.group(1).split(","):
        lo, _, hi = item.partition("-")
        if hi:
            width = len(lo)
            values = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
        else:
            values = [lo]
        for value in values:
            out.extend(_expand_one(head + value + tail))
    return out


def parse_duration(text: str) -> int | None:
    """``[days-][hours:]minutes:seconds`` as whole minutes, rounded down (None: unlimited)."""
    match = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text)
    if not match:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return (((days * 24 + hours) * 60 + minutes) * 60 + seconds) // 60
