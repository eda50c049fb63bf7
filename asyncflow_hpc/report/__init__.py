"""Reports from a telemetry log: a summary table, PNG figures and one self-contained HTML page.

    from asyncflow_hpc.report import read_log, summarize, write_report
    log = read_log("events.jsonl", workflow="experiment-42")   # workflow is optional
    print(render_text(summarize(log)))
    files = write_report(log, "report/")   # report/*.png and report/report.html

The summary needs nothing beyond the core dependencies; the figures need matplotlib (the
optional extra ``report``), imported only when figures are made. Also available as
``asyncflow-hpc report EVENTS.jsonl [--workflow ID] [--out DIR] [--group-readable]``, which
also writes every failure to ``failures.csv`` and ``failures.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .failures import failure_rows, failures_csv, failures_json
from .reader import Log, LogFormatError, TaskRow, read_log
from .summary import render_text, summarize

__all__ = ["Log", "LogFormatError", "TaskRow", "failure_rows", "read_log", "render_text",
           "summarize", "write_report"]


def write_report(log: Log, out_dir: str | os.PathLike, *,
                 summary: dict[str, Any] | None = None, failures: bool = False,
                 group_readable: bool = False) -> dict[str, str]:
    """Write ``summary.json``, one PNG per figure and ``report.html`` into ``out_dir``; with
    ``failures``, also ``failures.csv`` and ``failures.json`` (one row per failed task).

    Files are private to the user (0600, new folders 0700) like the log they are made from;
    ``group_readable`` makes them 0640 and the folder 0750 (new parents too), for a project
    group to read. Returns ``{name: path}`` of the files written.
    """
    from . import plots
    from .html import render_html

    out = _out_dir(out_dir, group_readable)
    mode = 0o640 if group_readable else 0o600
    summary = summary if summary is not None else summarize(log)
    rows = failure_rows(log)
    files: dict[str, str] = {}
    path = os.path.join(out, "summary.json")
    _write(path, json.dumps(summary, indent=2, default=str).encode(), mode)
    files["summary"] = path
    if failures:
        for name, data in (("failures_csv", failures_csv(rows)),
                           ("failures_json", failures_json(rows))):
            path = os.path.join(out, name.replace("_", "."))
            _write(path, data, mode)
            files[name] = path
    images: dict[str, bytes] = {}
    for name, fig in plots.all_figures(log).items():
        path = os.path.join(out, f"{name}.png")
        images[name] = plots.png_bytes(fig)
        _write(path, images[name], mode)
        files[name] = path
    path = os.path.join(out, "report.html")
    _write(path, render_html(summary, images, failures=rows).encode("utf-8"), mode)
    files["html"] = path
    return files


def _out_dir(out_dir: str | os.PathLike, group_readable: bool) -> str:
    """The report folder: made 0700 with its missing parents, refused if others control it
    (:func:`~asyncflow_hpc.safe_files.private_dir`); group-readable: those made are 0750, an
    existing folder of the user gains group read and search (and loses nothing)."""
    import stat

    from ..safe_files import private_dir

    out = private_dir(out_dir, 0o750 if group_readable else 0o700)
    if group_readable:
        st = os.stat(out)
        if st.st_uid == os.geteuid():
            os.chmod(out, stat.S_IMODE(st.st_mode) | 0o050)
    return out


def _write(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write a file private to the user (or ``mode``), like the log it is made from (task
    names, errors): a new file renamed into place; a symbolic link or another user's file
    there is refused."""
    from ..safe_files import write_file

    write_file(path, data, mode)
