"""``asyncflow-hpc run SCRIPT``: run a campaign script with the backend chosen on the command line.

Scripts that create their engine without a backend (``await WorkflowEngine.create()``) read
``ASYNCFLOW_HPC_BACKEND``; this verb sets it (and friends) from its flags and then runs the
script as ``__main__``, with its own arguments after ``--``.
"""

from __future__ import annotations

import os
import runpy
import sys

import click

from ..backends import BACKENDS


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("script", type=click.Path(exists=True, dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--backend", type=click.Choice(sorted(BACKENDS)), default=None,
              help="backend for engines created without one (default: $ASYNCFLOW_HPC_BACKEND "
                   "or local)")
@click.option("--resource", default=None,
              help="RADICAL-Pilot resource for --backend radical (e.g. local.localhost)")
def run_command(script: str, script_args: tuple[str, ...], backend: str | None,
                resource: str | None) -> None:
    """Run SCRIPT (a Python campaign) with the chosen backend."""
    if backend:
        os.environ["ASYNCFLOW_HPC_BACKEND"] = backend
    if resource:
        os.environ["ASYNCFLOW_HPC_RESOURCE"] = resource
    sys.argv = [script, *script_args]
    script_dir = os.path.dirname(os.path.abspath(script))
    if script_dir not in sys.path:
        sys.path.insert(0, script_dir)
    try:
        runpy.run_path(script, run_name="__main__")
    except KeyboardInterrupt:
        click.echo("asyncflow-hpc: interrupted", err=True)
        sys.exit(130)
