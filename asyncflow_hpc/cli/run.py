"""``asyncflow-hpc run SCRIPT``: run a campaign script with settings from the command line.

Scripts that create their engine without a backend (``await WorkflowEngine.create()``) read
``ASYNCFLOW_HPC_*`` environment variables; this verb sets them from its flags and runs the
script as ``__main__`` with its own arguments after ``--``. Nothing in the script changes
between a laptop run, a dry run and a run on a cluster.
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import time
from pathlib import Path

import click

from ..backends import BACKENDS
from ..errors import BackendError, ConfigurationError
from .submit import with_hpc_options


def default_journal(script: str) -> Path:
    """Where ``--resume`` finds the journal of an earlier run of SCRIPT (cwd-relative)."""
    return Path(".asyncflow-hpc") / f"{Path(script).stem}.journal.jsonl"


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default=None,
              help="Backend for engines created without one (default: $ASYNCFLOW_HPC_BACKEND, "
                   "else local).")
@click.option("--resource", default=None,
              help="RADICAL-Pilot resource for --backend radical (e.g. local.localhost).")
@click.option("--journal", "journal", type=click.Path(dir_okay=False), default=None,
              help="Record every finished task here (a new journal unless --resume).")
@click.option("--resume", is_flag=True,
              help="Reuse results recorded by an earlier run (default journal: "
                   ".asyncflow-hpc/<script>.journal.jsonl); only unfinished tasks run.")
@click.option("--telemetry", type=click.Path(dir_okay=False), default=None,
              help="Write the RHAPSODY JSONL event log here (read it with 'asyncflow-hpc report').")
@click.option("--progress", type=click.Choice(["auto", "rich", "plain", "off"]), default="auto",
              show_default=True,
              help="Live progress: a display on a terminal, periodic log lines otherwise.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output (same as --progress off).")
def run_command(script: str, script_args: tuple[str, ...], backend: str | None,
                resource: str | None, journal: str | None, resume: bool, telemetry: str | None,
                progress: str, quiet: bool) -> None:
    """Run SCRIPT, a Python campaign, with the chosen backend and options.

    Engines the script creates without a backend get one from these flags. --site S runs
    the tasks on RADICAL-Pilot with a pilot submitted as a batch job on site S (login-node
    mode); --in-allocation, inside a batch job, starts the pilot on the job's own nodes.
    Arguments after SCRIPT (use -- before ones that start with a dash) are passed to it.

    \b
    Examples:
      asyncflow-hpc run campaign.py                          # local backend
      asyncflow-hpc run campaign.py --site mycluster --nodes 2 --runtime 60
      asyncflow-hpc run campaign.py --in-allocation          # inside sbatch/qsub
      asyncflow-hpc run campaign.py --resume -- --samples 10
    """
    env = os.environ
    if backend:
        env["ASYNCFLOW_HPC_BACKEND"] = backend
    if resource:
        env["ASYNCFLOW_HPC_RESOURCE"] = resource
    # every run keeps a journal, so that a crashed run can always be resumed
    journal = journal or str(default_journal(script))
    if not resume:
        _start_fresh(Path(journal))
    Path(journal).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    env["ASYNCFLOW_HPC_JOURNAL"] = journal
    if telemetry:
        env["ASYNCFLOW_HPC_TELEMETRY"] = telemetry
    env["ASYNCFLOW_HPC_PROGRESS"] = "off" if quiet else progress
    sys.argv = [script, *script_args]
    script_dir = os.path.dirname(os.path.abspath(script))
    if script_dir not in sys.path:
        sys.path.insert(0, script_dir)
    try:
        runpy.run_path(script, run_name="__main__")
    except (ConfigurationError, BackendError) as exc:
        # bad input or an unusable backend: the message says what; a traceback adds nothing
        click.echo(f"asyncflow-hpc: {type(exc).__name__}: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("asyncflow-hpc: interrupted; finished tasks are in the journal, "
                   "continue with --resume", err=True)
        sys.exit(130)


# --site/--site-file/--nodes/--runtime/--in-allocation: they set ASYNCFLOW_HPC_* variables
run_command = with_hpc_options(run_command)


def _start_fresh(path: Path) -> None:
    """Move an earlier journal aside, so a plain run never silently reuses old results."""
    if path.exists() and path.stat().st_size:
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(path), str(backup))
