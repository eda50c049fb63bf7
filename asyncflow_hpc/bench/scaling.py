"""Weak and strong scaling series over node counts on a batch site: one job per point.

Why one batch job per point: each point then gets its own, fresh allocation of exactly that
many nodes, as a user's campaign would, and points cannot disturb each other. Inside a job
the work is split one engine per node (``srun --ntasks-per-node=1 python -m
asyncflow_hpc.bench worker``), each with the local backend on its node's cores; with
``--backend radical`` one process runs one pilot over the whole allocation instead.

* weak scaling: every node gets ``size`` tasks (total grows with the nodes);
* strong scaling: ``size`` tasks in total, split over the nodes.

Throughput of a point = all tasks / the slowest node's makespan. Efficiency is relative to
the smallest point: ``(X_n / n) / (X_1 / 1)``, which for weak scaling equals T_1 / T_n and for
strong scaling T_1 / (n T_n). All points are collected into one JSON document; plotting it is
:mod:`asyncflow_hpc.bench.plots`.

The batch script is rendered here with every value shell-quoted; the site (partition,
account, preparation lines, environment) comes from ``asyncflow_hpc.hpc.sites``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .report import document

__all__ = ["SeriesSpec", "aggregate_point", "parse_nodes", "render_job", "run_series",
           "share_of"]

FINAL = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL",
         "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT"}
#: backends run one engine per node; others (radical) one process for the allocation
PER_NODE_BACKENDS = {"local", "dryrun", "noop"}


@dataclasses.dataclass
class SeriesSpec:
    """What to measure: a workload at a size, over node counts, on a site."""

    site: str
    nodes: list[int]
    mode: str = "weak"                 # "weak" | "strong"
    workload: str = "sleep-exe"
    size: int = 64                     # per node (weak) or in total (strong)
    duration: float | None = None
    ranks: int = 2
    backend: str = "local"
    repeat: int = 1
    walltime: int | None = None        # minutes per point; the site's default otherwise
    timeout: float = 900.0             # seconds to wait for one point's job
    work_dir: Path = Path("bench-scaling")
    python: str = sys.executable
    extra_args: Sequence[str] = ()     # more sbatch options
    job_name: str = "afhpc-bench"      # every point's job is called this (scancel --name)


@dataclasses.dataclass(frozen=True)
class _Site:
    """The fields of a site this module uses (a stand-in when asyncflow_hpc.hpc is absent)."""

    name: str
    scheduler: str = "slurm"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    cores_per_node: int | None = None
    prepare: tuple[str, ...] = ()
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    walltime: int = 30
    directives: tuple[str, ...] = ()


def parse_nodes(text: str) -> list[int]:
    """``"1,2,4"`` or ``"1-4"`` -> sorted distinct node counts (each >= 1)."""
    out: set[int] = set()
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ConfigurationError(f"bad node list {text!r}: use e.g. 1,2,4 or 1-4")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        out.update(range(lo, hi + 1))
    if not out or min(out) < 1:
        raise ConfigurationError(f"bad node list {text!r}: node counts must be >= 1")
    return sorted(out)


def share_of(size: int, mode: str, rank: int, ranks: int) -> int:
    """Tasks one node runs: all of ``size`` (weak), or its part of it (strong, remainder first)."""
    if mode == "weak":
        return size
    if mode != "strong":
        raise ConfigurationError(f"mode must be weak or strong, got {mode!r}")
    return size // ranks + (1 if rank < size % ranks else 0)


def find_site(name: str) -> Any:
    """The site called ``name`` from asyncflow_hpc.hpc, or a plain SLURM stand-in for it."""
    try:
        from ..hpc.sites import find_site as lookup
    except ImportError:
        if name in ("local-slurm", "slurm"):
            return _Site(name, walltime=10)
        raise ConfigurationError(
            f"site {name!r}: site files need asyncflow_hpc.hpc; only 'local-slurm' is built in"
        ) from None
    return lookup(name)


def _cores_per_node(site: Any) -> int | None:
    if getattr(site, "cores_per_node", None):
        return int(site.cores_per_node)
    if shutil.which("sinfo") is None:
        return None
    cmd = ["sinfo", "-h", "-N", "-o", "%c"]
    if getattr(site, "partition", None):
        cmd += ["-p", site.partition]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return None
    counts = [int(x) for x in out if x.isdigit()]
    return min(counts) if counts else None


def render_job(spec: SeriesSpec, site: Any, nodes: int, out_dir: Path) -> str:
    """The sbatch script of one point; every value quoted for the shell it lands in."""
    q = shlex.quote
    walltime = spec.walltime or getattr(site, "walltime", 30) or 30
    cores = _cores_per_node(site)
    # job name and output path go on sbatch's command line (argv: no quoting to get wrong)
    lines = ["#!/bin/bash",
             f"#SBATCH --nodes={nodes}",
             f"#SBATCH --time={int(walltime)}"]
    per_node = spec.backend in PER_NODE_BACKENDS
    if per_node:
        lines.append("#SBATCH --ntasks-per-node=1")
        if cores:
            lines.append(f"#SBATCH --cpus-per-task={cores}")
    for key in ("partition", "account", "qos", "reservation"):
        value = getattr(site, key, None)
        if value:
            lines.append(f"#SBATCH --{key}={value}")  # validated scheduler tokens
    lines += [d for d in getattr(site, "directives", ()) if d.startswith("#SBATCH")]
    lines += ["set -euo pipefail", *getattr(site, "prepare", ())]
    for key, value in dict(getattr(site, "environment", {}) or {}).items():
        lines.append(f"export {key}={q(str(value))}")
    package_root = str(Path(__file__).resolve().parents[2])
    lines += [f"export PYTHONPATH={q(package_root)}${{PYTHONPATH:+:$PYTHONPATH}}",
              f"cd {q(str(out_dir))}",
              'echo "job $SLURM_JOB_ID on $SLURM_JOB_NODELIST started $(date +%s.%N)"']
    worker = [spec.python, "-m", "asyncflow_hpc.bench", "worker",
              "--workload", spec.workload, "--size", str(spec.size), "--mode", spec.mode,
              "--ranks", str(spec.ranks), "--backend", spec.backend,
              "--repeat", str(spec.repeat), "--nodes", str(nodes),
              "--json", str(out_dir / f"n{nodes}.rank{{rank}}.json")]
    if spec.duration is not None:
        worker += ["--duration", repr(float(spec.duration))]
    if cores:
        worker += ["--slots", str(cores)]
    cmd = " ".join(q(a) for a in worker)
    if per_node:
        cmd = f"srun --nodes={nodes} --ntasks-per-node=1 {cmd}"
    return "\n".join([*lines, cmd, ""])


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _job_state(job: str) -> str | None:
    """The job's state, or None once SLURM has forgotten it."""
    q = _run(["squeue", "-h", "-j", job, "-o", "%T"])
    state = q.stdout.strip().splitlines()
    if q.returncode == 0 and state:
        return state[0]
    s = _run(["scontrol", "show", "job", "-o", job])
    m = re.search(r"\bJobState=(\S+)", s.stdout)
    return m.group(1) if m else None


def wait_job(job: str, timeout: float) -> str:
    """Wait until ``job`` has ended; its final state (``GONE`` if SLURM has forgotten it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _job_state(job)
        if state is None:
            return "GONE"
        if state in FINAL:
            return state
        time.sleep(0.5)
    _run(["scancel", job])
    raise TimeoutError(f"job {job} did not finish in {timeout:.0f} s (cancelled)")


def submit(script: Path, *args: str) -> str:
    """``sbatch --parsable [ARGS] SCRIPT``; the job id."""
    proc = _run(["sbatch", "--parsable", *args, str(script)])
    if proc.returncode != 0:
        raise RuntimeError(f"sbatch {script} failed: {proc.stderr.strip() or proc.stdout}")
    job = proc.stdout.strip().split(";")[0]
    if not job.isdigit():
        raise RuntimeError(f"unexpected sbatch output {proc.stdout!r}")
    return job


def aggregate_point(nodes: int, ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """One point from the per-node results: total tasks over the slowest node's makespan."""
    ms = [r["measurement"] for r in ranks]
    failed = [m.get("error") for m in ms if m.get("error")]
    point: dict[str, Any] = {"nodes": nodes, "ranks": len(ranks),
                             "hosts": sorted({r.get("host", "?") for r in ranks}),
                             "tasks": sum(m["tasks"] for m in ms),
                             "completed": sum(m["completed"] for m in ms),
                             "error": "; ".join(failed) if failed else None}
    if failed or not ms:
        return point
    makespan = max(m["makespan_s"] for m in ms)
    slots = sum(m.get("slots") or 0 for m in ms) or None
    work = sum(r.get("work_core_s", 0.0) for r in ranks)
    point.update({
        "makespan_s": makespan,
        "ideal_s": max(m["ideal_s"] for m in ms),
        "throughput": point["completed"] / makespan if makespan > 0 else None,
        "overhead_per_task_s": max(m["overhead_per_task_s"] for m in ms),
        "startup_s": max(m["startup_s"] or 0.0 for m in ms),
        "slots": slots,
        "utilisation": work / (slots * makespan) if work and slots and makespan > 0 else None,
    })
    return point


def add_efficiency(points: list[dict[str, Any]]) -> None:
    """Efficiency of each point relative to the smallest successful one."""
    good = [p for p in points if p.get("throughput")]
    if not good:
        return
    base = min(good, key=lambda p: p["nodes"])
    per_node = base["throughput"] / base["nodes"]
    for p in points:
        p["efficiency"] = (p["throughput"] / p["nodes"]) / per_node if p.get("throughput") else None


def run_point(spec: SeriesSpec, site: Any, nodes: int, out_dir: Path) -> dict[str, Any]:
    """Submit one point's job, wait for it, read its per-node JSON files."""
    for old in out_dir.glob(f"n{nodes}.rank*.json"):
        old.unlink()
    script = out_dir / f"n{nodes}.sbatch"
    script.write_text(render_job(spec, site, nodes, out_dir))
    t0 = time.monotonic()
    job = submit(script, f"--job-name={spec.job_name}", f"--output={out_dir}/n{nodes}.out",
                 *spec.extra_args)
    try:
        state = wait_job(job, spec.timeout)
    except BaseException:
        _run(["scancel", job])
        raise
    files = sorted(out_dir.glob(f"n{nodes}.rank*.json"))
    ranks = [json.loads(f.read_text()) for f in files]
    point = aggregate_point(nodes, ranks)
    point.update({"job_id": job, "job_state": state, "turnaround_s": time.monotonic() - t0,
                  "script": str(script)})
    if state not in ("COMPLETED", "GONE") or not ranks:
        log = out_dir / f"n{nodes}.out"
        tail = log.read_text()[-1500:] if log.exists() else "(no output file)"
        point["error"] = point.get("error") or f"job {job} ended {state}: {tail}"
    return point


def run_series(spec: SeriesSpec, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every point of the series in turn; one JSON document with all of them."""
    site = find_site(spec.site)
    if getattr(site, "scheduler", "slurm") != "slurm":
        raise ConfigurationError(
            f"site {spec.site!r} uses {site.scheduler}; scaling series submit with sbatch "
            "(SLURM sites only)")
    most = getattr(site, "max_nodes", None)
    if most and max(spec.nodes) > most:
        raise ConfigurationError(f"site {spec.site!r} allows at most {most} nodes, "
                                 f"the series asks for {max(spec.nodes)}")
    if spec.mode == "strong" and spec.size < max(spec.nodes):
        raise ConfigurationError(f"strong scaling of {spec.size} tasks over {max(spec.nodes)} "
                                 "nodes leaves nodes idle")
    if shutil.which("sbatch") is None:
        raise ConfigurationError("sbatch not found: the scaling series needs a SLURM site")
    out_dir = Path(spec.work_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    points = []
    for n in spec.nodes:
        if progress:
            progress(f"{spec.mode} scaling: {n} node(s), submitting")
        point = run_point(spec, site, n, out_dir)
        points.append(point)
        if progress:
            msg = point.get("error") or (f"{point['completed']} tasks, "
                                         f"{point['throughput']:,.1f} tasks/s")
            progress(f"{spec.mode} scaling: {n} node(s): {msg}")
    add_efficiency(points)
    config = dataclasses.asdict(spec)
    config["work_dir"] = str(out_dir)
    config["extra_args"] = list(spec.extra_args)
    return document("scaling", series=config, site={"name": spec.site,
                                                     "scheduler": getattr(site, "scheduler", None)},
                    points=points)


def run_worker(workload: str, size: int, mode: str, *, duration: float | None, ranks: int,
               backend: str, repeat: int, slots: int | None, json_out: str,
               nodes: int | None = None) -> dict[str, Any]:
    """One node's part of a point (``python -m asyncflow_hpc.bench worker``)."""
    import asyncio
    import socket

    from .report import write_json
    from .runner import run_suite
    from .workloads import make_workload

    rank = int(os.environ.get("SLURM_PROCID", "0"))
    count = int(os.environ.get("SLURM_NTASKS", "1"))
    share = share_of(size, mode, rank, count)
    w = make_workload(workload, max(1, share), duration=duration, ranks=ranks)
    started = time.time()
    [m] = asyncio.run(run_suite([w], backend=backend, repeat=repeat, slots=slots))
    result = document("scaling-rank", rank=rank, ranks_total=count, nodes=nodes,
                      host=socket.gethostname(), share=share, started=started,
                      ended=time.time(), work_core_s=w.work(), measurement=m.as_dict())
    write_json(json_out.replace("{rank}", str(rank)), result)
    return result
