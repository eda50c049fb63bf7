"""One self-contained HTML page: the summary tables and the figures, embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
from typing import Any

from .pilots import DECISION_COLUMNS, PILOT_COLUMNS, decision_cells, pilot_cells, totals_text
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
pre{margin:.2em 0;font-size:.85em;white-space:pre-wrap;max-width:50em}td{vertical-align:top}
"""


def _e(x: Any) -> str:
    return html.escape("-" if x is None else str(x))


def _table(headers: list[str], rows: list[list[Any]], left: int = 1,
           text: tuple[int, ...] = ()) -> str:
    """A table; the first ``left`` columns and those in ``text`` aligned left."""
    def cls(i: int) -> str:
        return "l" if i < left or i in text else ""

    out = ["<table><tr>"]
    out += [f'<th class="{cls(i)}">{_e(h)}</th>' for i, h in enumerate(headers)]
    out.append("</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f'<td class="{cls(i)}">{_e(c)}</td>'
                                    for i, c in enumerate(r)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _n(x: Any) -> str:
    """A count with thousands separators (12,345)."""
    return "-" if x is None else f"{x:,}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} %"


def render_html(summary: dict[str, Any], images: dict[str, bytes],
                title: str = "asyncflow-hpc run report", *,
                failures: list[dict[str, Any]] | None = None) -> str:
    """The page: the summary's tables, the figures (PNG bytes by name) and every failure
    (``failures``, rows of :func:`.failures.failure_rows`; default: the summary's)."""
    s = summary
    d = s["durations"]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1><p class='note'>{_e(s['path'])}: {s['lines']:,} lines, "
             f"{s['sessions']:,} session(s)"
             + ("" if s["complete"] else
                " — <span class='bad'>incomplete: the run did not shut down</span>")
             + (f", {s['bad_lines']:,} unreadable line(s) skipped" if s["bad_lines"] else "")
             + "</p>"]
    overview = [["tasks", _n(s["tasks"])]]
    if s["blocks"]:
        overview.append(["blocks", _n(s["blocks"])])
    overview += [[state, _n(s["by_state"][state])] for state in STATES]
    r = s.get("retries") or {}
    if r:
        overview += [["tasks retried", _n(r["tasks"])], ["retries", _n(r["retries"])],
                     ["attempts timed out", _n(r["timeouts"])]]
    overview += [
        ["duration p50", fmt_seconds(d["p50"])], ["duration p90", fmt_seconds(d["p90"])],
        ["duration p99", fmt_seconds(d["p99"])], ["duration max", fmt_seconds(d["max"])],
        ["makespan", fmt_seconds(s["makespan_s"])], ["throughput", fmt_rate(s["tasks_per_s"])],
    ]
    parts.append("<h2>Summary</h2>" + _table(["", "value"], overview))
    if s.get("functions"):
        parts.append("<h2>By task function</h2>" + _table(
            ["function", "type", "tasks", "completed", "failed", "canceled", "retries",
             "timeouts", "p50", "p90", "p99", "max", "total run time"],
            [[f["function"], f["task_type"], _n(f["tasks"]), _n(f["completed"]),
              _n(f["failed"]), _n(f["canceled"]), _n(f["retries"]), _n(f["timeouts"]),
              *[fmt_seconds(f[k]) for k in ("p50", "p90", "p99", "max", "total_s")]]
             for f in s["functions"]], left=2))
        if s["functions_total"] > len(s["functions"]):
            parts.append(f"<p class='note'>{s['functions_total'] - len(s['functions']):,} "
                         "more functions (fewest tasks) not shown</p>")
    if s["workflows"]:
        parts.append("<h2>Workflows</h2>" + _table(
            ["workflow", "tasks", "completed", "failed", "canceled", "makespan", "throughput"],
            [[w["workflow_id"] if w["workflow_id"] is not None else "(none)", _n(w["tasks"]),
              _n(w["completed"]), _n(w["failed"]), _n(w["canceled"]),
              fmt_seconds(w["makespan_s"]), fmt_rate(w["tasks_per_s"])]
             for w in s["workflows"][:200]]))
    if s.get("pilots"):
        parts.append(_pilots(s["pilots"]))
    u = s.get("utilisation") or {}
    if u.get("samples"):
        parts.append(f"<h2>Resource samples ({u['samples']:,})</h2>" + _table(
            ["node", "samples", "CPU mean", "CPU max", "memory max"],
            [[node, _n(v["samples"]), _pct(v["cpu_mean"]), _pct(v["cpu_max"]),
              _pct(v["memory_max"])] for node, v in u["nodes"].items()]))
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
    rows = failures if failures is not None else s["failed"]
    if rows:
        parts.append(_failures(rows, s))
    parts.append("</body></html>\n")
    return "".join(parts)


def _pilots(section: dict[str, Any]) -> str:
    """The pilots (node-hours held and used, the totals) and every decision of the pool."""
    pilots = section["pilots"]
    out = []
    if pilots:
        with_pool = len({p["pool"] for p in pilots}) > 1
        out.append(f"<h2>Pilots ({len(pilots):,})</h2><p class='note'>"
                   f"{_e(totals_text(section))}</p>"
                   + _table(PILOT_COLUMNS, [pilot_cells(p, with_pool) for p in pilots], left=2,
                            text=(9, 10)))
    decisions = section["decisions"]
    if decisions:
        out.append(f"<h2>Pilot decisions ({len(decisions):,})</h2>"
                   + _table(DECISION_COLUMNS, [decision_cells(d) for d in decisions], left=4))
    return "".join(out)


def _failures(rows: list[dict[str, Any]], s: dict[str, Any]) -> str:
    """Every failure: who, arguments, attempts, the error, the root cause, the stderr tail."""
    out = [f"<h2>Failed tasks ({s['failed_total']:,})</h2>"]
    if s["error_types"]:
        out.append("<p class='note'>by error type: " + _e(", ".join(
            f"{k} ×{v:,}" for k, v in s["error_types"].items())) + "</p>")
    if len(rows) < s["failed_total"]:
        out.append(f"<p class='note'>the first {len(rows):,} shown; failures.csv has all</p>")
    out.append("<table><tr>" + "".join(f"<th class='l'>{h}</th>" for h in (
        "task", "name", "workflow", "attempts", "arguments", "error", "root cause",
        "stderr tail")) + "</tr>")
    for t in rows:
        tries = _e(t.get("attempts", 1))
        if t.get("timed_out"):
            tries += " <span class='bad'>timed out</span>"
        if t.get("retry_errors"):
            tries += f"<br><span class='note'>{_e(t['retry_errors'])}</span>"
        root = ""
        if t.get("root_task_name") or t.get("root_error_type"):
            who = _e(t.get("root_task_name")) + (f" ({_e(t['root_task_id'])})"
                                                 if t.get("root_task_id") else "")
            root = (f"{who}: <b>{_e(t.get('root_error_type'))}</b> "
                    f"{_e((t.get('root_error_message') or '')[:2000])}")
            if t.get("root_stderr_tail"):
                root += f"<pre>{_e(t['root_stderr_tail'])}</pre>"
        tail = f"<pre>{_e(t['stderr_tail'])}</pre>" if t.get("stderr_tail") else ""
        cells = [_e(t["task_id"]), _e(t["name"]), _e(t["workflow_id"]), tries,
                 _e((t.get("arguments") or "")[:1000]),
                 f"<b>{_e(t['error_type'])}</b> {_e((t.get('error_message') or '')[:2000])}",
                 root, tail]
        out.append("<tr>" + "".join(f"<td class='l'>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "".join(out)
