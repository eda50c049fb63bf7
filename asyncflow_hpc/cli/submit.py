"""``asyncflow-hpc submit SCRIPT --site NAME``: a campaign as a batch job, and ``run``'s site flags.

``submit`` renders the site's campaign template (``batch_templates/<scheduler>/campaign.sh``),
writes it next to the campaign and hands it to ``sbatch`` or ``qsub``; inside the job the
script runs ``asyncflow-hpc run SCRIPT --in-allocation``. ``--dry-run`` prints the script.

:func:`configure_run` and :func:`with_hpc_options` give ``asyncflow-hpc run`` its
``--site/--site-file/--nodes/--runtime/--in-allocation`` flags: they only set environment
variables, which ``create_backend_from_env`` turns into a configured RADICAL-Pilot backend,
so scripts that create their engine without a backend need no change.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigurationError
from ..hpc.allocation import current_allocation
from ..hpc.resources import ENV
from ..hpc.schedulers import SubmitError, scheduler_for
from ..hpc.sites import find_site
from ..hpc.templates import job_values, render_template
from ..safe_files import private_dir, write_file

__all__ = ["configure_run", "submit_command", "submit_script", "with_hpc_options"]


def configure_run(site: str | None, nodes: int | None, runtime: int | None,
                  in_allocation: bool, site_file: str | None = None) -> dict[str, str]:
    """Environment variables that make ``run`` use ``site`` (checked now, not at pilot start).

    ``ASYNCFLOW_HPC_BACKEND=radical`` is included when a site is given; an explicit
    ``--backend`` should be applied after (it wins). ``--in-allocation`` without a site uses
    the built-in site matching the allocation's scheduler (``local-slurm``/``local-pbs``).
    """
    env: dict[str, str] = {}
    if nodes is not None and nodes < 1:
        raise click.BadParameter(f"must be >= 1, got {nodes}", param_hint="--nodes")
    if runtime is not None and runtime < 1:
        raise click.BadParameter(f"must be >= 1 minute, got {runtime}", param_hint="--runtime")
    if in_allocation:
        alloc = current_allocation()
        if alloc is None:
            raise click.UsageError("--in-allocation: no SLURM or PBS allocation here "
                                   "(SLURM_JOB_ID/SLURM_JOB_NODELIST and PBS_JOBID are unset)")
        site = site or ("local-slurm" if alloc.scheduler == "slurm" else "local-pbs")
        env[ENV["in_allocation"]] = "1"
    if site:
        try:
            find_site(site, [site_file] if site_file else [])
        except ConfigurationError as exc:
            raise click.BadParameter(str(exc), param_hint="--site") from exc
        env["ASYNCFLOW_HPC_BACKEND"] = "radical"
        env[ENV["site"]] = site
        if site_file:
            env[ENV["site_file"]] = str(Path(site_file).resolve())
    if nodes is not None:
        env[ENV["nodes"]] = str(nodes)
    if runtime is not None:
        env[ENV["runtime"]] = str(runtime)
    return env


_HPC_OPTIONS = [
    click.Option(["--site"], default=None, metavar="NAME",
                 help="Run on this site (see 'asyncflow-hpc sites list'): RADICAL-Pilot backend, "
                      "pilot and resource config from the site file."),
    click.Option(["--site-file"], default=None, type=click.Path(exists=True, dir_okay=False),
                 help="Read sites from this TOML file too (wins over user and project files)."),
    click.Option(["--nodes"], type=int, default=None, help="Pilot size in nodes (default 1; "
                 "inside an allocation: all of its nodes)."),
    click.Option(["--runtime"], type=int, default=None, metavar="MIN",
                 help="Pilot walltime in minutes (default: the site's walltime; inside an "
                      "allocation: the time left, minus 2 minutes to close)."),
    click.Option(["--in-allocation"], is_flag=True, default=False,
                 help="This runs inside a batch job: start the pilot by fork on the job's nodes "
                      "(no second batch job) and launch tasks with srun / mpiexec."),
]


def with_hpc_options(command: click.Command) -> click.Command:
    """Add the site flags to an existing ``run`` command; they become env vars before it runs."""
    command.params.extend(_HPC_OPTIONS)
    callback = command.callback
    assert callback is not None

    @functools.wraps(callback)
    def wrapped(*args: Any, site: str | None, site_file: str | None, nodes: int | None,
                runtime: int | None, in_allocation: bool, **kwargs: Any) -> Any:
        env = configure_run(site, nodes, runtime, in_allocation, site_file)
        if kwargs.get("backend"):
            env.pop("ASYNCFLOW_HPC_BACKEND", None)  # an explicit --backend wins
        os.environ.update(env)
        return callback(*args, **kwargs)

    command.callback = wrapped
    return command


def compile_campaign(script: str) -> None:
    """Refuse a campaign script that does not compile, before anything is queued."""
    try:
        compile(Path(script).read_bytes(), script, "exec")
    except SyntaxError as exc:
        text = (exc.text or "").strip()
        raise click.ClickException(
            f"{exc.filename}:{exc.lineno}: SyntaxError: {exc.msg}"
            + (f"\n    {text}" if text else "") + "\n  (nothing was submitted)") from None
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read the campaign script {script}: {exc}") from None


def check_job_python(python: str, backend: str) -> None:
    """Check that the job's interpreter imports asyncflow-hpc and the backend, when it can be
    checked from here; else say so (the job itself checks first thing)."""
    import subprocess

    modules = "asyncflow_hpc, radical.pilot" if backend == "radical" else "asyncflow_hpc"
    path = python if os.path.isabs(python) else None
    if path is None or not os.access(path, os.X_OK):
        click.echo(f"asyncflow-hpc: cannot check the job's Python here ({python!r} is found "
                   "only after the site's prepare lines); the job checks that it imports "
                   f"{modules} before it starts the campaign", err=True)
        return
    try:
        proc = subprocess.run([path, "-c", f"import {modules}"], capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        click.echo(f"asyncflow-hpc: cannot check the job's Python {path}: {exc}", err=True)
        return
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        hint = " (pip install 'asyncflow-hpc[radical]' there)" if backend == "radical" else ""
        raise click.ClickException(f"the job's Python {path} cannot import {modules}: {last}"
                                   f"{hint}; nothing was submitted")


def submit_script(path: Path, scheduler: str, output: str) -> str:
    """Submit a rendered script with the site's scheduler (``sbatch``, ``qsub``); the job id."""
    try:
        return scheduler_for(scheduler).submit(path, output=output)
    except SubmitError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("submit", context_settings={"ignore_unknown_options": True})
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--site", required=True, metavar="NAME",
              help="Site to submit to (a site-file entry or a RADICAL-Pilot resource name).")
@click.option("--site-file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Read sites from this TOML file too.")
@click.option("--nodes", type=int, default=None, help="Nodes to allocate (default 1).")
@click.option("--runtime", type=int, default=None, metavar="MIN",
              help="Walltime in minutes (default: the site's walltime).")
@click.option("--job-name", default=None,
              help="Job name (letters, digits, _ . + -; default afhpc-<script>).")
@click.option("--backend", type=click.Choice(["radical", "local", "dryrun"]), default="radical",
              show_default=True, help="Backend the campaign uses inside the allocation.")
@click.option("--template", "template", default="campaign", show_default=True,
              help="Template name under batch_templates/<scheduler>/ (see 'templates list').")
@click.option("--campaign-dir", type=click.Path(file_okay=False), default=".",
              help="Folder the job runs in; its script, output and TMPDIR go here.  [default: .]")
@click.option("--warning", "warning", type=int, default=120, show_default=True, metavar="SEC",
              help="SLURM: signal the campaign this many seconds before the time limit.")
@click.option("--exclusive", is_flag=True, default=None,
              help="Ask for whole nodes (default: the site's 'exclusive').")
@click.option("--ntasks-per-node", type=int, default=None,
              help="Ask for this many tasks per node (default: the site's, else not asked).")
@click.option("--gpus-per-node", type=int, default=None,
              help="Ask for this many GPUs per node (default: the site's gpus_per_node).")
@click.option("--memory", default=None, metavar="SIZE",
              help="Memory per node, e.g. 64G (default: the site's 'memory', else not asked).")
@click.option("--dry-run", is_flag=True, help="Print the batch script; submit nothing.")
@click.option("--login-node", is_flag=True,
              help="With --dry-run: print instead the pilot job script that 'asyncflow-hpc run "
                   "SCRIPT --site SITE' would have RADICAL-Pilot submit from this login node.")
def submit_command(script: str, script_args: Sequence[str], site: str, site_file: str | None,
                   nodes: int | None, runtime: int | None, job_name: str | None, backend: str,
                   template: str, campaign_dir: str, warning: int, exclusive: bool | None,
                   ntasks_per_node: int | None, gpus_per_node: int | None, memory: str | None,
                   dry_run: bool, login_node: bool) -> None:
    """Submit SCRIPT, a campaign, as one batch job on SITE; print the job id.

    Renders batch_templates/<scheduler>/<template>.sh with the site's validated values,
    writes it to the campaign folder as <job-name>.<scheduler>.sh and submits it with sbatch
    (SLURM) or qsub (PBS); the job's output goes to <campaign-dir>/<job-name>.out. The job
    runs 'asyncflow-hpc run SCRIPT --in-allocation': the pilot starts on the job's own nodes
    (no second batch job) and tasks launch with srun (SLURM) or mpiexec/mpirun (PBS). With
    --backend local the tasks are plain subprocesses of the job instead. Arguments after
    SCRIPT (put -- before ones starting with a dash) are passed to it.

    \b
    Examples:
      asyncflow-hpc submit campaign.py --site mycluster --nodes 2 --runtime 60 --dry-run
      asyncflow-hpc submit campaign.py --site local-slurm --backend local -- --samples 10
    """
    if login_node and not dry_run:
        raise click.UsageError("--login-node shows a pilot job script: add --dry-run (to run "
                               "from the login node: asyncflow-hpc run SCRIPT --site SITE)")
    compile_campaign(script)
    try:
        found = find_site(site, [site_file] if site_file else [])
        asked = {k: v for k, v in (("exclusive", exclusive), ("ntasks_per_node", ntasks_per_node),
                                   ("gpus_per_node", gpus_per_node), ("memory", memory))
                 if v is not None}
        if asked:
            found = dataclasses.replace(found, **asked)  # checked again, like the site file
        if login_node:
            from ..hpc.pilot_script import pilot_job_script

            click.echo(pilot_job_script(found, nodes=nodes, runtime=runtime), nl=False)
            return
        camp = Path(campaign_dir).resolve()
        values = job_values(found, script, campaign_dir=camp, job_name=job_name, nodes=nodes,
                            runtime=runtime, backend=backend, script_args=list(script_args),
                            warning_seconds=warning, site_file=site_file)
        text = render_template(found.scheduler, template, values)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from exc
    check_job_python(values["python"], backend)
    if dry_run:
        click.echo(text, nl=False)
        return
    path = camp / f"{values['job_name']}.{found.scheduler}.sh"
    try:
        # the folder made 0700 (parents too) and checked; the script written as a new file
        # (mode 0700) renamed into place: a link or another user's file there is refused
        private_dir(camp)
        write_file(path, text.encode(), 0o700)
    except OSError as exc:  # UnsafePathError included
        raise click.ClickException(str(exc)) from exc
    job_id = submit_script(path, found.scheduler, values["output"])
    click.echo(job_id)
    click.echo(f"asyncflow-hpc: script {path}, output {values['output']}", err=True)
