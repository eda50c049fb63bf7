"""``asyncflow-hpc report EVENTS.jsonl``: summary of a telemetry log, optionally with figures."""

from __future__ import annotations

import sys

import click


@click.command("report")
@click.argument("events", type=click.Path(exists=True, dir_okay=False))
@click.option("--workflow", "workflow", default=None, metavar="ID",
              help="only the tasks of this workflow id")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              metavar="DIR", help="also write PNG figures, summary.json and report.html here "
                                  "(needs matplotlib: pip install 'asyncflow-hpc[report]')")
def report_command(events: str, workflow: str | None, out_dir: str | None) -> None:
    """Summarise EVENTS.jsonl (written with --telemetry / ASYNCFLOW_HPC_TELEMETRY)."""
    from rich.console import Console

    from ..report import read_log, summarize, write_report
    from ..report.reader import LogFormatError
    from ..report.summary import tables

    try:
        log = read_log(events, workflow=workflow)
    except (LogFormatError, OSError) as exc:
        _fail(exc)
    if workflow is not None and not log.tasks:
        full = read_log(events)
        known = ", ".join(full.workflow_ids[:20]) or "none"
        raise click.ClickException(f"no task of workflow {workflow!r} in {events} "
                                   f"(workflows in the log: {known})")
    summary = summarize(log)
    console = Console()
    for table in tables(summary):
        console.print(table)
    if out_dir is not None:
        try:
            files = write_report(log, out_dir, summary=summary)
        except ImportError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # UnsafePathError included: a link or a folder others control
            _fail(exc)
        click.echo(f"report written: {files['html']}", err=False)
    if not summary["complete"]:
        click.echo("note: the log has no end of session — the run was killed or is still "
                   "running", err=True)
    sys.stdout.flush()


def _fail(exc: BaseException) -> None:
    """One line on stderr and exit status 2: the input or the output path is unusable."""
    from ..errors import UnsafePathError

    text = str(exc)
    if isinstance(exc, OSError) and not isinstance(exc, UnsafePathError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    click.echo(f"asyncflow-hpc report: {text}", err=True)
    sys.exit(2)
