"""Weak and strong scaling series over node counts on a batch site: one job per point.

Why one batch job per point: each point then gets its own, fresh allocation of exactly that
many nodes, as a user's campaign would, and points cannot disturb each other. Each point's
job is the site's campaign template (``batch_templates/<scheduler>/campaign.sh``, rendered by
:mod:`asyncflow_hpc.hpc.templates` with every value validated and quoted) running the campaign
:mod:`asyncflow_hpc.bench.campaign`. Inside the job the work is either split one engine per
node (``srun --ntasks-per-node=1 python -m asyncflow_hpc.bench worker``, each with the local
backend on its node's cores), or, with ``--backend radical``, run by one engine on one pilot
over the whole allocation.

* weak scaling: every node gets ``size`` tasks (total grows with the nodes);
* strong scaling: ``size`` tasks in total, split over the nodes.

Throughput of a point = all tasks / the slowest node's makespan. Efficiency is relative to
the smallest point: ``(X_n / n) / (X_1 / 1)``, which for weak scaling equals T_1 / T_n and for
strong scaling T_1 / (n T_n). All points are collected into one JSON document; plotting it is
:mod:`asyncflow_hpc.bench.plots`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..child_env import with_package_on_path
from ..errors import ConfigurationError
from ..hpc.schedulers import SCHEDULERS, SubmitError
from .report import document

SLURM = SCHEDULERS["slurm"]  # the series submits with sbatch

__all__ = ["SeriesSpec", "aggregate_point", "parse_nodes", "render_job", "run_series",
           "share_of"]

#: the campaign every point's batch job runs (through ``asyncflow-hpc run``)
CAMPAIGN = Path(__file__).resolve().with_name("campaign.py")

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
    site_file: str | None = None       # a sites TOML file besides the usual ones


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


def find_site(name: str, site_file: str | None = None) -> Any:
    """The site called ``name`` (built-in, site files, or a RADICAL-Pilot resource name)."""
    from ..hpc.sites import find_site as lookup

    return lookup(name, [site_file] if site_file else [])


def _cores_per_node(site: Any) -> int | None:
    if getattr(site, "cores_per_node", None):
        return int(site.cores_per_node)
    return SLURM.cores_per_node(getattr(site, "partition", None))


def point_dir(out_dir: Path, nodes: int) -> Path:
    """Where one point's job script, log and per-node results go: ``WORK_DIR/n<nodes>``."""
    return out_dir / f"n{nodes}"


def render_job(spec: SeriesSpec, site: Any, nodes: int, out_dir: Path) -> str:
    """The batch script of one point: the site's campaign template running the bench campaign.

    ``out_dir`` is the point's own directory (job log ``<job_name>.out``, ``rank<r>.json``).
    Values are validated and quoted by :func:`asyncflow_hpc.hpc.templates.job_values`.
    """
    import dataclasses

    from ..hpc.templates import job_values, render_template

    if not site.exclusive and not site.ntasks_per_node:
        site = dataclasses.replace(site, exclusive=True)  # a scaling point owns its nodes
    walltime = int(spec.walltime or getattr(site, "walltime", 30) or 30)
    args = ["--workload", spec.workload, "--size", str(spec.size), "--mode", spec.mode,
            "--ranks", str(spec.ranks), "--repeat", str(spec.repeat), "--nodes", str(nodes),
            "--json", str(out_dir / "rank{rank}.json")]
    if spec.duration is not None:
        args += ["--duration", repr(float(spec.duration))]
    cores = _cores_per_node(site)
    if cores:
        args += ["--slots", str(cores)]
    values = job_values(site, CAMPAIGN, campaign_dir=out_dir, job_name=spec.job_name,
                        nodes=nodes, runtime=walltime, backend=spec.backend, script_args=args,
                        warning_seconds=min(120, walltime * 60 // 4), site_file=spec.site_file,
                        python=spec.python)
    return render_template(site.scheduler, "campaign", values)


def wait_job(job: str, timeout: float) -> str:
    """Wait until ``job`` has ended; its final state (``GONE`` if SLURM has forgotten it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = SLURM.job_state(job)
        if state is None:
            return "GONE"
        if state in FINAL:
            return state
        time.sleep(0.5)
    SLURM.cancel(job)
    raise TimeoutError(f"job {job} did not finish in {timeout:.0f} s (cancelled)")


def submit(script: Path, *args: str) -> str:
    """``sbatch --parsable [ARGS] SCRIPT``, the package on the job's PYTHONPATH; the job id."""
    try:
        return SLURM.submit(script, extra=args, env=with_package_on_path(), timeout=60)
    except SubmitError as exc:
        raise RuntimeError(f"{script}: {exc}") from exc


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
    from ..safe_files import private_dir, write_file

    where = point_dir(out_dir, nodes)
    private_dir(where)
    for old in where.glob("rank*.json"):
        old.unlink()
    script = where / "job.sh"
    write_file(script, render_job(spec, site, nodes, where).encode(), 0o700)
    t0, submitted = time.monotonic(), time.time()
    job = submit(script, *spec.extra_args)
    try:
        state = wait_job(job, spec.timeout)
    except BaseException:
        SLURM.cancel(job)
        raise
    files = sorted(where.glob("rank*.json"))
    ranks = [json.loads(f.read_text()) for f in files]
    point = aggregate_point(nodes, ranks)
    log = where / f"{spec.job_name}.out"
    starts = [r["started"] for r in ranks if isinstance(r.get("started"), (int, float))]
    point.update({"job_id": job, "job_state": state, "turnaround_s": time.monotonic() - t0,
                  # submission until the first node's worker ran: queue wait, job and
                  # interpreter start (the batch system's start-up, not the engine's)
                  "job_start_s": min(starts) - submitted if starts else None,
                  "script": str(script), "log": str(log)})
    if state not in ("COMPLETED", "GONE") or not ranks:
        tail = log.read_text()[-1500:] if log.exists() else "(no output file)"
        point["error"] = point.get("error") or f"job {job} ended {state}: {tail}"
    return point


def run_series(spec: SeriesSpec, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every point of the series in turn; one JSON document with all of them."""
    site = find_site(spec.site, spec.site_file)
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
    from ..safe_files import private_dir

    out_dir = Path(spec.work_dir).resolve()
    private_dir(out_dir)
    from .runner import machine_info

    machine = machine_info()
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
    return document("scaling", machine=machine, series=config, site={"name": spec.site,
                                                     "scheduler": getattr(site, "scheduler", None)},
                    points=points)


def run_worker(workload: str, size: int, mode: str, *, duration: float | None, ranks: int,
               backend: str, repeat: int, slots: int | None, json_out: str,
               nodes: int | None = None, options: dict[str, Any] | None = None,
               rank: int | None = None, count: int | None = None) -> dict[str, Any]:
    """One node's part of a point (``python -m asyncflow_hpc.bench worker``), or, with
    ``rank=0, count=1``, a whole point in one process (one pilot over the allocation)."""
    import asyncio
    import socket

    from .report import write_json
    from .runner import run_suite
    from .workloads import make_workload

    rank = int(os.environ.get("SLURM_PROCID", "0")) if rank is None else rank
    count = int(os.environ.get("SLURM_NTASKS", "1")) if count is None else count
    share = share_of(size, mode, rank, count)
    w = make_workload(workload, max(1, share), duration=duration, ranks=ranks)
    started = time.time()
    [m] = asyncio.run(run_suite([w], backend=backend, repeat=repeat, slots=slots,
                                options=options))
    # SLURM's name for the node (several slurmd may share one machine, and so its hostname)
    host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    result = document("scaling-rank", rank=rank, ranks_total=count, nodes=nodes, host=host,
                      share=share, started=started, ended=time.time(), work_core_s=w.work(),
                      measurement=m.as_dict())
    write_json(json_out.replace("{rank}", str(rank)), result)
    return result
