"""``asyncflow-hpc report EVENTS.jsonl``: summary of a telemetry log, optionally with figures."""

from __future__ import annotations

import os
import sys

import click


@click.command("report")
@click.argument("events", type=click.Path(exists=True, dir_okay=False))
@click.option("--workflow", "workflow", default=None, metavar="ID",
              help="only the tasks of this workflow id")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              metavar="DIR", help="also write PNG figures, summary.json, report.html and every "
                                  "failed task to failures.csv and failures.json here (needs "
                                  "matplotlib: pip install 'asyncflow-hpc[report]')")
@click.option("--group-readable", is_flag=True, default=False,
              help="make the files written with --out readable by your group (files 0640, "
                   "folder 0750); by default they are private (0600, new folders 0700)")
def report_command(events: str, workflow: str | None, out_dir: str | None,
                   group_readable: bool) -> None:
    """Summarise EVENTS.jsonl (written with --telemetry / ASYNCFLOW_HPC_TELEMETRY)."""
    from rich.console import Console

    from ..report import read_log, summarize, write_report
    from ..report.reader import LogFormatError
    from ..report.summary import tables

    try:
        log = read_log(events, workflow=workflow)
    except (LogFormatError, OSError) as exc:
        _fail(exc)
    if log.lines == 0:
        _fail(ValueError(f"{events} is empty: not an asyncflow-hpc telemetry log (or its run "
                         "has written nothing yet)"))
    if workflow is not None and not log.tasks:
        full = read_log(events)
        known = ", ".join(full.workflow_ids[:20]) or "none"
        raise click.ClickException(f"no task of workflow {workflow!r} in {events} "
                                   f"(workflows in the log: {known})")
    summary = summarize(log)
    hint = (f"all in {os.path.join(out_dir, 'failures.csv')}" if out_dir is not None
            else "--out DIR writes them all to failures.csv")
    console = Console()
    for table in tables(summary, failures_hint=hint):
        console.print(table)
    if out_dir is not None:
        try:
            files = write_report(log, out_dir, summary=summary, failures=True,
                                 group_readable=group_readable)
        except ImportError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # UnsafePathError included: a link or a folder others control
            _fail(exc)
        click.echo(f"report written: {files['html']}", err=False)
        click.echo(f"failures ({summary['failed_total']:,}): {files['failures_csv']}, "
                   f"{files['failures_json']}", err=False)
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
    text = " ".join(text.split())  # one line, whatever the path or the problem holds
    click.echo(f"asyncflow-hpc report: {text}", err=True)
    sys.exit(2)
