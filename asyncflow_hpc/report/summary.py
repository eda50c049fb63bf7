"""Numbers of a run: tasks by state, duration percentiles, throughput, makespan per workflow,
the slowest tasks and the failed ones with their errors. Pure Python (no plotting deps)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .reader import Log, TaskRow

__all__ = ["summarize", "percentile", "render_text"]

STATES = ("completed", "failed", "canceled", "running", "pending")


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (like numpy's default); q in [0, 100]."""
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _span(rows: list[TaskRow]) -> tuple[float | None, float | None]:
    starts = [r.created for r in rows if r.created is not None]
    ends = [r.end for r in rows if r.end is not None]
    return (min(starts) if starts else None, max(ends) if ends else None)


def summarize(log: Log, *, top: int = 10, max_failed: int = 20) -> dict[str, Any]:
    tasks = [t for t in log.tasks if not t.is_block]
    blocks = [t for t in log.tasks if t.is_block]
    by_state = Counter(t.state for t in tasks)
    # durations of tasks that reported a start (as RHAPSODY: the others have duration 0 and
    # incomplete_lifecycle; they finished inside the submit call or never ran)
    ran = [t for t in tasks if t.duration is not None and t.started is not None]
    durations = sorted(t.duration for t in ran if t.state in ("completed", "failed"))
    first, last = _span(tasks)
    makespan = (last - first) if first is not None and last is not None else None
    finished = by_state["completed"] + by_state["failed"]
    workflows = []
    groups: dict[Any, list[TaskRow]] = {}
    for t in tasks:
        groups.setdefault(t.workflow_id, []).append(t)
    for wid in sorted(groups, key=lambda w: (w is None, str(w))):
        rows = groups[wid]
        w_first, w_last = _span(rows)
        span = (w_last - w_first) if w_first is not None and w_last is not None else None
        counts = Counter(r.state for r in rows)
        workflows.append({
            "workflow_id": wid, "tasks": len(rows), **{s: counts[s] for s in STATES},
            "makespan_s": span,
            "tasks_per_s": (counts["completed"] + counts["failed"]) / span if span else None,
        })
    slowest = sorted(ran,
                     key=lambda t: t.duration, reverse=True)[:top]  # type: ignore[arg-type,return-value]
    failed = sorted((t for t in tasks if t.state == "failed"), key=lambda t: t.end or 0.0)
    nodes = Counter(t.node for t in tasks if t.node is not None)
    return {
        "path": log.path,
        "sessions": len(log.sessions),
        "lines": log.lines,
        "bad_lines": log.bad_lines,
        "complete": not log.truncated,
        "tasks": len(tasks),
        "blocks": len(blocks),
        "by_state": {s: by_state[s] for s in STATES},
        "durations": {
            "count": len(durations),
            "without_start": sum(1 for t in tasks if t.started is None and t.end is not None),
            "mean": sum(durations) / len(durations) if durations else None,
            "p50": percentile(durations, 50),
            "p90": percentile(durations, 90),
            "p99": percentile(durations, 99),
            "max": durations[-1] if durations else None,
        },
        "makespan_s": makespan,
        "tasks_per_s": finished / makespan if makespan else None,
        "nodes": dict(nodes.most_common()),
        "workflows": workflows,
        "slowest": [_task_brief(t) for t in slowest],
        "failed": [_task_brief(t) for t in failed[:max_failed]],
        "failed_total": len(failed),
        "error_types": dict(Counter(t.error_type or "unknown" for t in failed).most_common()),
    }


def _task_brief(t: TaskRow) -> dict[str, Any]:
    return {"task_id": t.task_id, "name": t.name, "workflow_id": t.workflow_id, "node": t.node,
            "state": t.state, "duration_s": t.duration, "error_type": t.error_type,
            "error_message": t.error_message}


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def fmt_rate(r: float | None) -> str:
    return "-" if r is None else f"{r:,.1f}/s" if r < 100 else f"{r:,.0f}/s"


def render_text(summary: dict[str, Any], width: int = 100) -> str:
    """The summary as plain-text tables (rich), for the terminal."""
    from rich.console import Console

    console = Console(width=width, record=True, file=_Null(), color_system=None)
    for table in tables(summary):
        console.print(table)
    return console.export_text()


def tables(summary: dict[str, Any]) -> list[Any]:
    """The summary as a list of rich renderables."""
    from rich.table import Table

    out: list[Any] = []
    s = summary
    head = Table(title=f"asyncflow-hpc run report: {s['path']}", show_header=False,
                 title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    head.add_row("tasks", f"{s['tasks']:,}" + (f"  (+{s['blocks']:,} blocks)" if s["blocks"] else ""))
    for state in STATES:
        if s["by_state"][state] or state in ("completed", "failed"):
            head.add_row(f"  {state}", f"{s['by_state'][state]:,}")
    d = s["durations"]
    head.add_row("duration p50 / p90 / p99",
                 f"{fmt_seconds(d['p50'])} / {fmt_seconds(d['p90'])} / {fmt_seconds(d['p99'])}")
    head.add_row("duration mean / max", f"{fmt_seconds(d['mean'])} / {fmt_seconds(d['max'])}")
    if d["without_start"]:
        head.add_row("  not in durations", f"{d['without_start']:,} tasks that reported no start")
    head.add_row("makespan", fmt_seconds(s["makespan_s"]))
    head.add_row("throughput", fmt_rate(s["tasks_per_s"]))
    if s["nodes"]:
        nodes = list(s["nodes"].items())
        text = ", ".join(f"{n} ({c:,})" for n, c in nodes[:4])
        head.add_row("nodes", text + (f" and {len(nodes) - 4} more" if len(nodes) > 4 else ""))
    head.add_row("sessions", f"{s['sessions']}" + ("" if s["complete"] else
                                                    "  (incomplete: the run did not shut down)"))
    if s["bad_lines"]:
        head.add_row("unreadable lines", f"{s['bad_lines']} (skipped)")
    out.append(head)

    if s["workflows"]:
        wf = Table(title="workflows", title_justify="left")
        for col in ("workflow", "tasks", "completed", "failed", "canceled", "makespan",
                    "throughput"):
            wf.add_column(col, justify="left" if col == "workflow" else "right")
        for w in s["workflows"][:50]:
            wf.add_row(str(w["workflow_id"] if w["workflow_id"] is not None else "(none)"),
                       f"{w['tasks']:,}", f"{w['completed']:,}", f"{w['failed']:,}",
                       f"{w['canceled']:,}", fmt_seconds(w["makespan_s"]),
                       fmt_rate(w["tasks_per_s"]))
        if len(s["workflows"]) > 50:
            wf.caption = f"{len(s['workflows']) - 50} more workflows not shown"
        out.append(wf)

    if s["slowest"]:
        sl = Table(title="slowest tasks", title_justify="left")
        for col in ("task", "name", "workflow", "node", "state", "duration"):
            sl.add_column(col, justify="right" if col == "duration" else "left")
        for t in s["slowest"]:
            sl.add_row(t["task_id"], t["name"], str(t["workflow_id"] or "-"), str(t["node"] or "-"),
                       t["state"], fmt_seconds(t["duration_s"]))
        out.append(sl)

    if s["failed"]:
        fl = Table(title=f"failed tasks ({s['failed_total']:,})", title_justify="left")
        for col in ("task", "name", "workflow", "error"):
            fl.add_column(col, overflow="fold")
        for t in s["failed"]:
            msg = (t["error_message"] or "").strip().splitlines()
            first = msg[0] if msg else ""
            if len(first) > 120:
                first = first[:117] + "..."
            fl.add_row(t["task_id"], t["name"], str(t["workflow_id"] or "-"),
                       f"{t['error_type']}: {first}" if first else str(t["error_type"]))
        if s["failed_total"] > len(s["failed"]):
            kinds = ", ".join(f"{k} x{v:,}" for k, v in s["error_types"].items())
            fl.caption = f"{s['failed_total'] - len(s['failed']):,} more; by type: {kinds}"
        out.append(fl)
    return out


class _Null:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass
