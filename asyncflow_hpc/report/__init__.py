"""Reports from a telemetry log: a summary table, PNG figures and one self-contained HTML page.

    from asyncflow_hpc.report import read_log, summarize, write_report
    log = read_log("events.jsonl", workflow="experiment-42")   # workflow is optional
    print(render_text(summarize(log)))
    files = write_report(log, "report/")   # report/*.png and report/report.html

The summary needs nothing beyond the core dependencies; the figures need matplotlib (the
optional extra ``report``), imported only when figures are made. Also available as
``asyncflow-hpc report EVENTS.jsonl [--workflow ID] [--out DIR]``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .reader import Log, TaskRow, read_log
from .summary import render_text, summarize

__all__ = ["Log", "TaskRow", "read_log", "render_text", "summarize", "write_report"]


def write_report(log: Log, out_dir: str | os.PathLike, *,
                 summary: dict[str, Any] | None = None) -> dict[str, str]:
    """Write ``summary.json``, one PNG per figure and ``report.html`` into ``out_dir``.

    Returns ``{name: path}`` of the files written.
    """
    from ..safe_files import private_dir
    from . import plots
    from .html import render_html

    out = private_dir(out_dir)  # created 0700 (parents too); refused if others control it
    summary = summary if summary is not None else summarize(log)
    files: dict[str, str] = {}
    path = os.path.join(out, "summary.json")
    _write(path, json.dumps(summary, indent=2, default=str).encode())
    files["summary"] = path
    images: dict[str, bytes] = {}
    for name, fig in plots.all_figures(log).items():
        path = os.path.join(out, f"{name}.png")
        images[name] = plots.png_bytes(fig)
        _write(path, images[name])
        files[name] = path
    path = os.path.join(out, "report.html")
    _write(path, render_html(summary, images).encode("utf-8"))
    files["html"] = path
    return files


def _write(path: str, data: bytes) -> None:
    """Write a file private to the user, like the log it is made from (task names, errors):
    a new file renamed into place; a symbolic link or another user's file there is refused."""
    from ..safe_files import write_file

    write_file(path, data, 0o600)
