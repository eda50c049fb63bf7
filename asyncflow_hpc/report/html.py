"""One self-contained HTML page: the summary tables and the figures, embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
from typing import Any

from .summary import STATES, fmt_rate, fmt_seconds

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1400px;padding:0 1em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0 1em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right;font-size:.9em}
td.l,th.l{text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #ddd;margin:.4em 0}
.note{color:#666;font-size:.85em}.bad{color:#b00}
"""


def _e(x: Any) -> str:
    return html.escape("-" if x is None else str(x))


def _table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    out = ["<table><tr>"]
    out += [f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(headers)]
    out.append("</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{_e(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def render_html(summary: dict[str, Any], images: dict[str, bytes],
                title: str = "asyncflow-hpc run report") -> str:
    s = summary
    d = s["durations"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1><p class='note'>{_e(s['path'])}: {s['lines']:,} lines, "
             f"{s['sessions']} session(s)"
             + ("" if s["complete"] else
                " — <span class='bad'>incomplete: the run did not shut down</span>")
             + (f", {s['bad_lines']} unreadable line(s) skipped" if s["bad_lines"] else "")
             + "</p>"]
    overview = [["tasks", f"{s['tasks']:,}"]]
    if s["blocks"]:
        overview.append(["blocks", f"{s['blocks']:,}"])
    overview += [[state, f"{s['by_state'][state]:,}"] for state in STATES]
    overview += [
        ["duration p50", fmt_seconds(d["p50"])], ["duration p90", fmt_seconds(d["p90"])],
        ["duration p99", fmt_seconds(d["p99"])], ["duration max", fmt_seconds(d["max"])],
        ["makespan", fmt_seconds(s["makespan_s"])], ["throughput", fmt_rate(s["tasks_per_s"])],
    ]
    parts.append("<h2>Summary</h2>" + _table(["", "value"], overview))
    if s["workflows"]:
        parts.append("<h2>Workflows</h2>" + _table(
            ["workflow", "tasks", "completed", "failed", "canceled", "makespan", "throughput"],
            [[w["workflow_id"] if w["workflow_id"] is not None else "(none)", f"{w['tasks']:,}",
              w["completed"], w["failed"], w["canceled"], fmt_seconds(w["makespan_s"]),
              fmt_rate(w["tasks_per_s"])] for w in s["workflows"][:200]]))
    captions = {"timeline": "Task timeline by node and worker slot",
                "concurrency": "Running and waiting tasks over time",
                "utilisation": "Utilisation", "durations": "Task durations"}
    for name, png in images.items():
        b64 = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{_e(captions.get(name, name))}</h2>"
                     f"<img alt='{_e(name)}' src='data:image/png;base64,{b64}'>")
    if s["slowest"]:
        parts.append("<h2>Slowest tasks</h2>" + _table(
            ["task", "name", "workflow", "node", "state", "duration"],
            [[t["task_id"], t["name"], t["workflow_id"], t["node"], t["state"],
              fmt_seconds(t["duration_s"])] for t in s["slowest"]], left=5))
    if s["failed"]:
        parts.append(f"<h2>Failed tasks ({s['failed_total']:,})</h2>" + _table(
            ["task", "name", "workflow", "error type", "message"],
            [[t["task_id"], t["name"], t["workflow_id"], t["error_type"],
              (t["error_message"] or "")[:500]] for t in s["failed"]], left=5))
        if s["failed_total"] > len(s["failed"]):
            parts.append("<p class='note'>by error type: " + _e(", ".join(
                f"{k} ×{v:,}" for k, v in s["error_types"].items())) + "</p>")
    parts.append("</body></html>\n")
    return "".join(parts)
