"""Numbers of a run: tasks by state, duration percentiles, throughput, makespan per workflow
and per task function, retries and timeouts, resource samples, the slowest tasks and the
failed ones with their errors and root causes; a pilot pool's pilots, their node-hours and
decisions (:mod:`.pilots`). Pure Python (no plotting deps)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from .failures import failure_rows, is_timeout
from .pilots import pilot_section, pilot_tables
from .reader import Log, TaskRow

__all__ = ["summarize", "percentile", "render_text", "by_function"]

STATES = ("completed", "failed", "canceled", "running", "pending")
MAX_FUNCTIONS = 200  # rows of the per-function breakdown kept in the summary
TEXT_FUNCTIONS = 30  # ... and shown in the terminal


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


def _ran_durations(rows: list[TaskRow]) -> list[float]:
    """Sorted durations of the finished tasks that reported a start (as RHAPSODY: the others
    have duration 0 and incomplete_lifecycle; they finished inside the submit call or never
    ran)."""
    return sorted(t.duration for t in rows if t.duration is not None and t.started is not None
                  and t.state in ("completed", "failed"))


def _timeouts(t: TaskRow) -> int:
    """Attempts of ``t`` that ended in a timeout."""
    n = 1 if t.state == "failed" and is_timeout(t.error_type) else 0
    return n + sum(1 for et, _ in (t.retry_errors or ()) if is_timeout(et))


def by_function(tasks: list[TaskRow]) -> list[dict[str, Any]]:
    """Per task function (task name): counts by state, retries, timed-out attempts and the
    duration percentiles; most tasks first."""
    groups: dict[str, list[TaskRow]] = {}
    for t in tasks:
        groups.setdefault(t.name, []).append(t)
    out = []
    for name, rows in groups.items():
        counts = Counter(r.state for r in rows)
        d = _ran_durations(rows)
        out.append({
            "function": name, "task_type": rows[0].task_type, "tasks": len(rows),
            **{s: counts[s] for s in ("completed", "failed", "canceled")},
            "retries": sum(r.attempts - 1 for r in rows),
            "timeouts": sum(_timeouts(r) for r in rows),
            "p50": percentile(d, 50), "p90": percentile(d, 90), "p99": percentile(d, 99),
            "max": d[-1] if d else None, "total_s": sum(d) if d else None,
        })
    out.sort(key=lambda f: (-f["tasks"], f["function"]))
    return out


def _utilisation(samples: list[dict]) -> dict[str, Any]:
    """Resource samples per node: how many, CPU mean and max, memory max (percent)."""
    nodes: dict[str, dict[str, Any]] = {}
    for r in samples:
        n = nodes.setdefault(r.get("node_id") or "?", {"samples": 0, "cpu": [], "mem": []})
        n["samples"] += 1
        if r.get("cpu_percent") is not None:
            n["cpu"].append(r["cpu_percent"])
        if r.get("memory_percent") is not None:
            n["mem"].append(r["memory_percent"])
    return {"samples": len(samples), "nodes": {
        node: {"samples": n["samples"],
               "cpu_mean": sum(n["cpu"]) / len(n["cpu"]) if n["cpu"] else None,
               "cpu_max": max(n["cpu"], default=None),
               "memory_max": max(n["mem"], default=None)}
        for node, n in sorted(nodes.items())}}


def summarize(log: Log, *, top: int = 10, max_failed: int = 20) -> dict[str, Any]:
    """The run's numbers as a JSON-able dict (``summary.json``); ``failed`` holds
    ``max_failed`` failures, each kind of failure represented (:func:`_pick`;
    :func:`.failures.failure_rows` has them all)."""
    tasks = [t for t in log.tasks if not t.is_block]
    blocks = [t for t in log.tasks if t.is_block]
    by_state = Counter(t.state for t in tasks)
    ran = [t for t in tasks if t.duration is not None and t.started is not None]
    durations = _ran_durations(tasks)
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
    failed = failure_rows(log)
    retried = [t for t in tasks if t.attempts > 1]
    functions = by_function(tasks)
    nodes = Counter(t.node for t in tasks if t.node is not None)
    out: dict[str, Any] = {
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
        "functions": functions[:MAX_FUNCTIONS],
        "functions_total": len(functions),
        "retries": {"tasks": len(retried), "retries": sum(t.attempts - 1 for t in retried),
                    "timeouts": sum(_timeouts(t) for t in tasks)},
        "utilisation": _utilisation(log.resources),
        "slowest": [_task_brief(t) for t in slowest],
        "failed": [{**r, "state": "failed"} for r in _pick(failed, max_failed)],
        "failed_total": len(failed),
        "error_types": dict(Counter(r["error_type"] or "unknown" for r in failed).most_common()),
    }
    pilots = pilot_section(log)
    if pilots is not None:  # a pilot pool ran: its pilots, node-hours and decisions
        out["pilots"] = pilots
    return out


def _pick(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``n`` of the failure rows, in their order: the first of each kind (function, error
    type, root error type) before more of a kind, so that one odd failure is not hidden by
    many alike."""
    if len(rows) <= n:
        return rows
    seen: set[tuple] = set()
    first, rest = [], []
    for i, r in enumerate(rows):
        kind = (r["name"], r["error_type"], r.get("root_error_type"))
        (rest if kind in seen else first).append(i)
        seen.add(kind)
    keep = sorted((first + rest)[:n])
    return [rows[i] for i in keep]


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


def tables(summary: dict[str, Any], *, failures_hint: str | None = None) -> list[Any]:
    """The summary as a list of rich renderables. ``failures_hint`` ends the failures table's
    caption when some are not shown (where the full list is)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    def e(x: Any) -> str:  # names and messages are text, never rich markup
        return escape("-" if x is None else str(x))

    out: list[Any] = []
    s = summary
    head = Table(title=f"asyncflow-hpc run report: {e(s['path'])}", show_header=False,
                 title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    head.add_row("tasks", f"{s['tasks']:,}" + (f"  (+{s['blocks']:,} blocks)" if s["blocks"] else ""))
    for state in STATES:
        if s["by_state"][state] or state in ("completed", "failed"):
            head.add_row(f"  {state}", f"{s['by_state'][state]:,}")
    r = s.get("retries") or {}
    if r.get("tasks") or r.get("timeouts"):
        head.add_row("retried / timed out", f"{r['tasks']:,} tasks retried ({r['retries']:,} "
                                            f"retries); {r['timeouts']:,} attempts timed out")
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
        text = ", ".join(f"{e(n)} ({c:,})" for n, c in nodes[:4])
        head.add_row("nodes", text + (f" and {len(nodes) - 4} more" if len(nodes) > 4 else ""))
    u = s.get("utilisation") or {}
    if u.get("samples"):
        head.add_row("utilisation", f"{u['samples']:,} samples; " + "; ".join(
            f"{e(n)}: CPU mean {_pct(v['cpu_mean'])} max {_pct(v['cpu_max'])}, "
            f"memory max {_pct(v['memory_max'])}" for n, v in list(u["nodes"].items())[:4]))
    head.add_row("sessions", f"{s['sessions']}" + ("" if s["complete"] else
                                                    "  (incomplete: the run did not shut down)"))
    if s["bad_lines"]:
        head.add_row("unreadable lines", f"{s['bad_lines']:,} (skipped)")
    out.append(head)

    if s.get("functions"):
        # nine columns: no vertical rules, compact durations, so that 80 columns suffice
        fn = Table(title="by task function (durations: p50 p90 p99 max)", title_justify="left",
                   box=box.SIMPLE_HEAD, padding=0)
        fn.add_column("function", overflow="fold", min_width=12)
        for col in ("tasks", "failed", "retries", "timeouts", "p50", "p90", "p99", "max"):
            fn.add_column(col, justify="right", no_wrap=True)
        for f in s["functions"][:TEXT_FUNCTIONS]:
            fn.add_row(e(f["function"]), f"{f['tasks']:,}", f"{f['failed']:,}",
                       f"{f['retries']:,}", f"{f['timeouts']:,}",
                       *[fmt_seconds(f[k]).replace(" ", "") for k in ("p50", "p90", "p99", "max")])
        if s["functions_total"] > TEXT_FUNCTIONS:
            fn.caption = f"{s['functions_total'] - TEXT_FUNCTIONS:,} more functions not shown"
        out.append(fn)

    if s["workflows"]:
        wf = Table(title="workflows", title_justify="left")
        for col in ("workflow", "tasks", "completed", "failed", "canceled", "makespan",
                    "throughput"):
            wf.add_column(col, justify="left" if col == "workflow" else "right")
        for w in s["workflows"][:50]:
            wf.add_row(e(w["workflow_id"] if w["workflow_id"] is not None else "(none)"),
                       f"{w['tasks']:,}", f"{w['completed']:,}", f"{w['failed']:,}",
                       f"{w['canceled']:,}", fmt_seconds(w["makespan_s"]),
                       fmt_rate(w["tasks_per_s"]))
        if len(s["workflows"]) > 50:
            wf.caption = f"{len(s['workflows']) - 50:,} more workflows not shown"
        out.append(wf)

    if s.get("pilots"):
        out += pilot_tables(s["pilots"])

    if s["slowest"]:
        sl = Table(title="slowest tasks", title_justify="left")
        for col in ("task", "name", "workflow", "node", "state", "duration"):
            sl.add_column(col, justify="right" if col == "duration" else "left")
        for t in s["slowest"]:
            sl.add_row(e(t["task_id"]), e(t["name"]), e(t["workflow_id"]), e(t["node"]),
                       t["state"], fmt_seconds(t["duration_s"]))
        out.append(sl)

    if s["failed"]:
        fl = Table(title=f"failed tasks ({s['failed_total']:,})", title_justify="left",
                   show_lines=True)
        fl.add_column("task", overflow="fold", max_width=28)
        fl.add_column("error", overflow="fold")
        for t in s["failed"]:
            fl.add_row(e("\n".join(_failure_who(t))), e("\n".join(failure_text(t))))
        if s["failed_total"] > len(s["failed"]):
            kinds = ", ".join(f"{k} x{v:,}" for k, v in s["error_types"].items())
            fl.caption = e(f"{s['failed_total'] - len(s['failed']):,} more; by type: {kinds}"
                           + (f"; {failures_hint}" if failures_hint else ""))
        out.append(fl)
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} %"


def _failure_who(t: dict[str, Any]) -> list[str]:
    attempts = t.get("attempts", 1)
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    return [str(t["task_id"]), str(t["name"]), f"workflow {t['workflow_id'] or '-'}",
            tries + (", timed out" if t.get("timed_out") else "")]


def _first_line(text: str | None, limit: int = 200) -> str:
    lines = (text or "").strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _tail(text: str | None, lines: int = 5, width: int = 160) -> list[str]:
    rows = [ln if len(ln) <= width else ln[: width - 3] + "..."
            for ln in (text or "").rstrip().splitlines()[-lines:]]
    return ["  " + ln for ln in rows]


def failure_text(t: dict[str, Any]) -> list[str]:
    """Lines about one failure (a row of :func:`.failures.failure_rows`) for the terminal:
    the error, earlier attempts, the root cause of a dependency failure, the stderr tail."""
    first = _first_line(t.get("error_message"))
    inputs = t.get("failed_inputs") and (t.get("root_task_name") or t.get("root_error_type"))
    if inputs:
        first = f"input {t['failed_inputs']} failed"  # the engine's message: in the CSV
    out = [f"{t['error_type']}: {first}" if first else str(t["error_type"])]
    # an executable's failure message names its command already
    if t.get("arguments") and not inputs and t.get("error_type") != "TaskExecutionError":
        out.append(f"arguments: {_first_line(t['arguments'], 160)}")
    if t.get("retry_errors"):
        out.append(f"earlier attempts: {t['retry_errors']}")
    if t.get("root_task_name") or t.get("root_error_type"):
        who = t.get("root_task_name") or "?"
        if t.get("root_task_id"):
            who += f" ({t['root_task_id']})"
        msg = _first_line(t.get("root_error_message"))
        out.append(f"root cause: {who} failed with {t.get('root_error_type') or '?'}"
                   + (f": {msg}" if msg else ""))
        if t.get("root_stderr_tail"):
            out += ["root stderr tail:", *_tail(t["root_stderr_tail"])]
    if t.get("stderr_tail"):
        out += ["stderr tail:", *_tail(t["stderr_tail"])]
    return out


class _Null:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass
