"""The ``asyncflow-hpc`` command line: one module per verb, gathered here.

Verb modules are imported only when their verb runs (or ``--help`` lists them), so
``asyncflow-hpc run`` never pays for matplotlib, RADICAL-Pilot or the bench harness.
"""

from __future__ import annotations

import importlib

import click

from .._version import __version__

#: verb -> "module:attribute" (relative to this package)
VERBS: dict[str, str] = {
    "run": "run:run_command",
    "submit": "submit:submit_command",
    "sites": "sites:sites_group",
    "templates": "templates:templates_group",
    "doctor": "doctor:doctor_command",
    "report": "report:report_command",
    "bench": "bench:bench_command",
    "dashboard": "dashboard:dashboard_command",
}


class _LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = VERBS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="asyncflow-hpc")
def cli() -> None:
    """asyncflow-hpc: asynchronous scientific workflows from a laptop to SLURM and PBS."""


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="asyncflow-hpc")
