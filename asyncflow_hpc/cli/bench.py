"""``asyncflow-hpc bench``: standard workloads on a backend or site, side by side, scaling.

    asyncflow-hpc bench noop chain --size 1000            # on the local backend
    asyncflow-hpc bench --compare --json out.json         # + plain asyncio, radical.asyncflow
    asyncflow-hpc bench sleep-exe --site local-slurm      # one batch job on a site
    asyncflow-hpc bench scaling --site S --nodes 1,2,4 --mode weak --json s.json --plot s.png
    asyncflow-hpc bench pool fanout --site local-slurm   # pilot pool: node-hours held vs used

``bench WORKLOAD...`` is shorthand for ``bench run WORKLOAD...``: the group passes anything
that is not a subcommand to ``run``, so the common case needs no extra word.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import click

from ..backends import BACKENDS

__all__ = ["bench_command"]

WORKLOAD_NAMES = ["noop", "chain", "fanout", "seed", "seed-blocking", "true", "sleep",
                  "sleep-exe", "mpi"]
#: what ``bench`` runs with no workload named (MPI only when asked: it needs mpirun)
DEFAULT_SET = ["noop", "chain", "fanout", "seed", "true", "sleep"]


class _DefaultToRun(click.Group):
    """A group whose unknown first argument means ``run`` (so ``bench noop`` works)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        elif not args:
            args = ["run"]
        return super().parse_args(ctx, args)


@click.group("bench", cls=_DefaultToRun, context_settings={"help_option_names": ["-h", "--help"]})
def bench_command() -> None:
    """Benchmark the engine: throughput, overhead, makespan vs ideal, utilisation, start-up.

    WORKLOAD names: noop, chain, fanout, seed, seed-blocking, true, sleep, sleep-exe, mpi.
    """


def _workloads(names: tuple[str, ...], size: int | None, duration: float | None,
               ranks: int) -> list[Any]:
    """``noop`` or ``noop=500`` (a size for that workload alone, winning over --size)."""
    from ..bench.workloads import make_workload

    out = []
    for item in names or DEFAULT_SET:
        name, _, own = item.partition("=")
        if name not in WORKLOAD_NAMES:
            raise click.BadParameter(f"{name!r}: choose from {', '.join(WORKLOAD_NAMES)}",
                                     param_hint="WORKLOAD")
        if own and (not own.isdigit() or int(own) < 1):
            raise click.BadParameter(f"{item!r}: the size after = must be a whole number >= 1",
                                     param_hint="WORKLOAD")
        out.append(make_workload(name, int(own) if own else size, duration=duration, ranks=ranks))
    return out


@bench_command.command("run")
@click.argument("workloads", nargs=-1)
@click.option("--size", "-n", type=click.IntRange(min=1), default=None,
              help="Tasks (hops, width, workflows) per workload; each has its own default.")
@click.option("--duration", type=click.FloatRange(min=0), default=None,
              help="Seconds per task for sleep, seed-blocking, sleep-exe and mpi.")
@click.option("--ranks", type=click.IntRange(min=1), default=2, show_default=True,
              help="MPI ranks per task for the mpi workload.")
@click.option("--repeat", "-r", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs per workload; the best counts.")
@click.option("--backend", "-b", type=click.Choice(sorted(BACKENDS)), default="local",
              show_default=True)
@click.option("--slots", type=click.IntRange(min=1), default=None,
              help="Cores for executables at once (local backend's max_processes; the ideal "
                   "makespan is computed for it). Default: this machine's cores; with "
                   "--compare no bound, as in radical.asyncflow and plain asyncio.")
@click.option("--site", default=None, help="Run inside one batch job on this site instead.")
@click.option("--site-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Read sites from this TOML file too.")
@click.option("--nodes", type=click.IntRange(min=1), default=1, show_default=True,
              help="Nodes for the batch job (with --site).")
@click.option("--job-name", default="afhpc-bench", show_default=True,
              help="Name of the batch job (with --site).")
@click.option("--compare", is_flag=True,
              help="Also run plain asyncio and radical.asyncflow (if installed); print ratios.")
@click.option("--reference-max-tasks", type=click.IntRange(min=0), default=2000,
              show_default=True, help="Skip radical.asyncflow for workloads larger than this.")
@click.option("--reference-repeat", type=click.IntRange(min=1), default=None,
              help="Runs per workload for radical.asyncflow (default: --repeat).")
@click.option("--compare-parsl", is_flag=True,
              help="With --backend radical: run the same small-task workloads (noop, true, "
                   "sleep, chain) through Parsl's HighThroughputExecutor on the same cores "
                   "and print the ratio (needs parsl).")
@click.option("--cores", type=click.IntRange(min=1), default=2, show_default=True,
              help="Pilot cores for --compare-parsl (local.localhost).")
@click.option("--markdown", is_flag=True, help="With --compare: print a markdown table too.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the results as JSON here.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="With --compare: bar chart of the side-by-side (needs matplotlib).")
def run_command(workloads: tuple[str, ...], size: int | None, duration: float | None,
                ranks: int, repeat: int, backend: str, slots: int | None, site: str | None,
                site_file: str | None, nodes: int, job_name: str, compare: bool,
                reference_max_tasks: int, reference_repeat: int | None, compare_parsl: bool,
                cores: int, markdown: bool, json_out: str | None, plot: str | None) -> None:
    """Run WORKLOADS (default: all but sleep-exe and mpi) and print a table.

    A WORKLOAD is a name (noop, chain, fanout, seed, seed-blocking, true, sleep, sleep-exe,
    mpi), optionally
    with its own size: noop=10000 true=500.
    """
    from ..bench.report import document, format_measurements, write_json
    from ..bench.runner import machine_info

    if plot and not compare:
        raise click.UsageError("--plot draws the side-by-side: add --compare")
    from ..backends import require_backend
    from ..errors import ConfigurationError

    try:
        require_backend(backend)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    if compare_parsl:
        _compare_parsl(workloads, size, duration, backend, cores, json_out)
        return
    if site:
        if len(workloads) > 1:
            raise click.UsageError("with --site, name one workload per batch job")
        name, _, own = (workloads or ("sleep-exe",))[0].partition("=")
        if name not in WORKLOAD_NAMES:
            raise click.BadParameter(f"{name!r}: choose from {', '.join(WORKLOAD_NAMES)}")
        _site_point(site, name, int(own) if own.isdigit() else size, duration, ranks, repeat,
                    backend, nodes, json_out, site_file, job_name)
        return
    ws = _workloads(workloads, size, duration, ranks)
    if slots is None and backend == "local" and not compare:
        slots = os.cpu_count() or 1  # the ideal makespan is for this machine's cores
    info = machine_info()
    click.echo(f"asyncflow-hpc {info['asyncflow_hpc']} bench on {info['host']} "
               f"({info['cpus']} cores, Python {info['python']}), best of {repeat}")
    if compare:
        from ..bench.baselines import compare as side_by_side
        from ..bench.baselines import format_comparison

        rows = asyncio.run(side_by_side(ws, repeat=repeat, slots=slots,
                                        reference_max_tasks=reference_max_tasks,
                                        reference_repeat=reference_repeat))
        ours = [r.asyncflow_hpc for r in rows]
        click.echo(format_measurements(ours))
        click.echo("\nside by side (ratio = asyncflow-hpc / asyncio; speed-up = "
                   "radical.asyncflow / asyncflow-hpc):")
        click.echo(format_comparison(rows))
        if markdown:
            click.echo("\n" + format_comparison(rows, markdown=True))
        doc = document("bench", machine=info, backend="local", repeat=repeat,
                       reference_repeat=reference_repeat or repeat,
                       results=[m.as_dict() for m in ours],
                       comparison=[r.as_dict() for r in rows])
    else:
        from ..bench.runner import run_suite

        ms = asyncio.run(run_suite(ws, backend=backend, repeat=repeat, slots=slots))
        click.echo(format_measurements(ms))
        doc = document("bench", machine=info, backend=backend, repeat=repeat,
                       results=[m.as_dict() for m in ms])
    if json_out:
        click.echo(f"wrote {write_json(json_out, doc)}")
    if plot:
        from ..bench.plots import plot_comparison
        click.echo(f"wrote {plot_comparison(doc, plot)}")
    results = doc.get("results", [])
    if any(r.get("error") for r in results):
        raise SystemExit(1)


#: what --compare-parsl runs, and its sizes unless --size or NAME=N says otherwise
PARSL_WORKLOADS = {"noop": 10_000, "true": 1_000, "sleep": 1_000, "chain": 100}


def _compare_parsl(workloads: tuple[str, ...], size: int | None, duration: float | None,
                   backend: str, cores: int, json_out: str | None) -> None:
    """``bench --backend radical --compare-parsl``: one pilot, then Parsl HTEX, same cores."""
    import importlib.util

    if backend != "radical":
        raise click.UsageError("--compare-parsl compares a RADICAL-Pilot pilot with Parsl: "
                               "add --backend radical")
    for module, extra in (("radical.pilot", "radical"), ("parsl", "parsl")):
        if importlib.util.find_spec(module.split(".")[0]) is None or \
                importlib.util.find_spec(module) is None:
            raise click.ClickException(f"--compare-parsl needs {module}, which is not "
                                       f"installed: pip install 'asyncflow-hpc[{extra}]'")
    chosen = []
    for item in workloads or tuple(PARSL_WORKLOADS):
        name, _, own = item.partition("=")
        if name not in PARSL_WORKLOADS:
            raise click.BadParameter(f"{name!r}: --compare-parsl runs "
                                     f"{', '.join(PARSL_WORKLOADS)}", param_hint="WORKLOAD")
        chosen.append((name, int(own) if own.isdigit() else size or PARSL_WORKLOADS[name]))
    os.environ.setdefault("RADICAL_PROFILE", "FALSE")
    from ..bench.pilot_compare import format_points, run_ours, run_parsl

    d = 0.01 if duration is None else duration
    pilot = {"resource": "local.localhost", "cores": cores, "runtime": 60}
    ours, slots = asyncio.run(run_ours(chosen, duration=d, pilot=pilot))
    theirs = run_parsl(chosen, workers=slots or cores, duration=d)
    click.echo(f"one local.localhost pilot of {cores} cores (warm pool: {slots} slots) vs "
               f"Parsl HTEX with {slots or cores} workers; ratio = asyncflow-hpc / Parsl")
    click.echo(format_points(ours, theirs))
    if json_out:
        from ..bench.report import write_json
        doc = {"ours": [p.as_dict() for p in ours], "parsl": [p.as_dict() for p in theirs]}
        click.echo(f"wrote {write_json(json_out, doc)}")
    if any(p.error for p in ours):
        raise SystemExit(1)


def _site_point(site: str, workload: str, size: int | None, duration: float | None,
                ranks: int, repeat: int, backend: str, nodes: int, json_out: str | None,
                site_file: str | None = None, job_name: str = "afhpc-bench") -> None:
    """``bench WORKLOAD --site S``: a one-point series (one batch job)."""
    from ..bench.scaling import SeriesSpec

    spec = SeriesSpec(site=site, nodes=[nodes], workload=workload, size=size or 16,
                      duration=duration, ranks=ranks, backend=backend, repeat=repeat,
                      work_dir=Path(json_out).with_suffix("") if json_out else Path("bench-site"),
                      site_file=site_file, job_name=job_name)
    doc = _run_series(spec)
    _echo_points(doc)
    if json_out:
        from ..bench.report import write_json
        click.echo(f"wrote {write_json(json_out, doc)}")
    if any(p.get("error") for p in doc["points"]):
        raise SystemExit(1)


def _run_series(spec: Any) -> dict[str, Any]:
    from ..bench.scaling import run_series
    from ..errors import ConfigurationError

    try:
        return run_series(spec, progress=lambda msg: click.echo(msg, err=True))
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc


def _echo_points(doc: dict[str, Any]) -> None:
    from ..bench.report import format_table, one_line, seconds

    rows = []
    for p in doc["points"]:
        if p.get("error"):
            rows.append([str(p["nodes"]), str(p["tasks"]), "FAILED", "", "", "", "", "", "",
                         one_line(str(p["error"]), 80)])
            continue
        rows.append([str(p["nodes"]), f"{p['completed']}", seconds(p["makespan_s"]),
                     seconds(p["ideal_s"]), f"{p['throughput']:,.1f}",
                     f"{p['efficiency']:.0%}" if p.get("efficiency") is not None else "-",
                     f"{p['utilisation']:.0%}" if p.get("utilisation") is not None else "-",
                     seconds(p.get("startup_s")), seconds(p.get("job_start_s")),
                     f"job {p['job_id']}, {p['turnaround_s']:.1f} s"])
    click.echo(format_table(["nodes", "tasks", "makespan", "ideal", "tasks/s", "efficiency",
                             "util", "startup", "queue+launch", "batch job"], rows))


@bench_command.command("scaling")
@click.option("--site", required=True, help="Site to submit to (see 'asyncflow-hpc sites').")
@click.option("--nodes", "nodes_text", default="1", show_default=True,
              help="Node counts: 1,2,4 or 1-4; one batch job each.")
@click.option("--mode", type=click.Choice(["weak", "strong"]), default="weak", show_default=True,
              help="weak: --size tasks per node; strong: --size tasks in total.")
@click.option("--workload", "-w", type=click.Choice(WORKLOAD_NAMES), default="sleep-exe",
              show_default=True)
@click.option("--size", "-n", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0), default=None,
              help="Seconds per task (sleep, sleep-exe, mpi).")
@click.option("--ranks", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--backend", "-b", type=click.Choice(sorted(BACKENDS)), default="local",
              show_default=True,
              help="In the job: local/dryrun run one engine per node; radical one pilot.")
@click.option("--repeat", "-r", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--walltime", type=click.IntRange(min=1), default=None,
              help="Minutes per job (default: the site's).")
@click.option("--timeout", type=click.FloatRange(min=1), default=900, show_default=True,
              help="Seconds to wait for each job (then it is cancelled).")
@click.option("--work-dir", type=click.Path(file_okay=False), default="bench-scaling",
              show_default=True, help="Job scripts, logs and per-node results go here.")
@click.option("--job-name", default="afhpc-bench", show_default=True,
              help="Name of every point's batch job (cancel them all with scancel --name).")
@click.option("--site-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Read sites from this TOML file too.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the whole series here (default: WORK_DIR/scaling.json).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Plot throughput and efficiency against nodes (needs matplotlib).")
def scaling_command(site: str, nodes_text: str, mode: str, workload: str, size: int,
                    duration: float | None, ranks: int, backend: str, repeat: int,
                    walltime: int | None, timeout: float, work_dir: str, job_name: str,
                    site_file: str | None, json_out: str | None, plot: str | None) -> None:
    """Weak or strong scaling over node counts on SITE: one batch job per point.

    Each point's job is the site's campaign template running the bench campaign: one engine
    per node (local, dryrun) or one pilot over the allocation (radical).
    """
    from ..bench.report import write_json
    from ..bench.scaling import SeriesSpec, parse_nodes
    from ..errors import ConfigurationError

    try:
        nodes = parse_nodes(nodes_text)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc), param_hint="--nodes") from exc
    if mode == "strong" and size < max(nodes):
        raise click.BadParameter(f"strong scaling of {size} tasks over {max(nodes)} nodes "
                                 "leaves nodes idle", param_hint="--size")
    spec = SeriesSpec(site=site, nodes=nodes, mode=mode, workload=workload, size=size,
                      duration=duration, ranks=ranks, backend=backend, repeat=repeat,
                      walltime=walltime, timeout=timeout, work_dir=Path(work_dir),
                      job_name=job_name, site_file=site_file)
    doc = _run_series(spec)
    _echo_points(doc)
    out = write_json(json_out or Path(work_dir) / "scaling.json", doc)
    click.echo(f"wrote {out}")
    if plot:
        from ..bench.plots import plot_scaling
        try:
            click.echo(f"wrote {plot_scaling(doc, plot)}")
        except ConfigurationError as exc:
            raise click.ClickException(str(exc)) from exc
    if any(p.get("error") for p in doc["points"]):
        raise SystemExit(1)


@bench_command.command("pool")
@click.argument("scenario", type=click.Choice(["fanout", "chain"]))
@click.option("--site", default="local-slurm", show_default=True,
              help="Site of the pilots (one node each).")
@click.option("--pilots", type=click.IntRange(min=1), default=3, show_default=True,
              help="fanout: the fixed pool's pilots, the elastic pool's maximum.")
@click.option("--wide", type=click.IntRange(min=1), default=2000, show_default=True,
              help="fanout: short tasks of the fan-out.")
@click.option("--wide-s", type=click.FloatRange(min=0), default=1.0, show_default=True)
@click.option("--narrow", type=click.IntRange(min=1), default=10, show_default=True,
              help="fanout: long aggregations after it.")
@click.option("--narrow-s", type=click.FloatRange(min=0), default=30.0, show_default=True)
@click.option("--runtime", type=click.IntRange(min=1), default=None,
              help="Pilot walltime in minutes (fanout: 60, chain: 3).")
@click.option("--tasks", type=click.IntRange(min=1), default=100, show_default=True,
              help="chain: tasks of the campaign.")
@click.option("--task-s", type=click.FloatRange(min=0), default=8.0, show_default=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the results as JSON here.")
def pool_command(scenario: str, site: str, pilots: int, wide: int, wide_s: float, narrow: int,
                 narrow_s: float, runtime: int | None, tasks: int, task_s: float,
                 json_out: str | None) -> None:
    """A pilot pool on SITE: node-hours held vs used, fixed against elastic (fanout), or a
    campaign several walltimes long on a chain of pilots (chain). Needs RADICAL-Pilot."""
    from ..backends import require_backend
    from ..bench import pool as bench_pool
    from ..bench.report import document, write_json
    from ..errors import ConfigurationError, UnsafePathError

    try:
        require_backend("radical")
        if json_out and Path(json_out).absolute().parent.exists():
            from ..safe_files import check_dir

            check_dir(Path(json_out).absolute().parent)  # refused now, not after the runs
        if scenario == "fanout":
            doc = bench_pool.fanout(site, pilots, wide, wide_s, narrow, narrow_s,
                                    runtime=runtime or 60, echo=click.echo)
        else:
            doc = bench_pool.chain(site, runtime or 3, tasks, task_s, echo=click.echo)
    except (ConfigurationError, UnsafePathError) as exc:
        raise click.ClickException(str(exc)) from None
    if json_out:
        click.echo(f"wrote {write_json(json_out, document('bench-pool', scenario=scenario, **doc))}")
