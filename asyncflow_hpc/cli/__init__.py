"""The ``asyncflow-hpc`` command line: one module per verb, gathered here."""

from __future__ import annotations

import click

from .._version import __version__
from .run import run_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="asyncflow-hpc")
def cli() -> None:
    """asyncflow-hpc: asynchronous scientific workflows from a laptop to SLURM and PBS."""


cli.add_command(run_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="asyncflow-hpc")
