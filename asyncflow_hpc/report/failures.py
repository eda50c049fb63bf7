"""Every failed task of a log, one row each, with what a user needs to act on it.

A row names the task, what the log holds of its arguments (an executable's command line, a
function's input tasks: the log records no Python argument values), its workflow, the error
(type, message, and the stderr tail an executable's error carries), its attempts and whether
it timed out; for a dependency failure, the task at the root of the chain and that task's
error. :func:`failures_csv` and :func:`failures_json` write the rows as files.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime, timezone
from typing import Any

from .reader import Log, TaskRow

__all__ = ["FIELDS", "failure_rows", "failures_csv", "failures_json", "split_stderr",
           "TIMEOUT_TYPES"]

FIELDS = ("task_id", "name", "task_type", "arguments", "workflow_id", "session_id", "node",
          "error_type", "error_message", "stderr_tail", "attempts", "timed_out",
          "retry_errors", "failed_inputs", "root_task_id", "root_task_name", "root_error_type",
          "root_error_message", "root_stderr_tail", "duration_s", "ended_at")
TIMEOUT_TYPES = frozenset({"TaskTimeoutError"})
DEPENDENCY = "DependencyFailureError"
_STDERR = "; stderr tail:"  # how TaskExecutionError appends the tail of the task's stderr
# a dependency failure's message: ... input 'root' failed with ErrorType: first line, or
# 'root' (upstream of input 'x') failed with ...
_ROOT_RE = re.compile(r"'(?P<name>[^']*)'(?: \(upstream of input '[^']*'\))? failed with "
                      r"(?P<type>[A-Za-z_][\w.]*)(?:: (?P<msg>.*))?", re.S)
_MAX_INPUTS = 5  # input tasks named in the arguments summary


def split_stderr(message: str | None) -> tuple[str, str]:
    """``(message without the stderr tail, the stderr tail)``; the tail is ``""`` if none."""
    if not message:
        return "", ""
    i = message.find(_STDERR + "\n")
    if i >= 0:
        return message[:i], message[i + len(_STDERR) + 1:]
    if message.endswith(_STDERR):  # cut after the label (a dependency failure's first line)
        return message[: -len(_STDERR)], ""
    return message, ""


def is_timeout(error_type: str | None) -> bool:
    return error_type in TIMEOUT_TYPES


def failure_rows(log: Log) -> list[dict[str, Any]]:
    """One dict per failed task (blocks excepted), in the order they failed."""
    failed = sorted((t for t in log.tasks if t.state == "failed" and not t.is_block),
                    key=lambda t: t.end or 0.0)
    if not failed:
        return []
    index = log.failed_index or {(t.session_id, t.task_id): t for t in failed}
    names = _input_names(log, failed)
    roots: dict[tuple[str, str], TaskRow | None] = {}
    return [_row(t, index, names, roots) for t in failed]


def _input_names(log: Log, failed: list[TaskRow]) -> dict[tuple[str, str], str]:
    """Names of the input tasks of the failed ones (one pass over the log's rows)."""
    wanted = {(t.session_id, d) for t in failed for d in (t.depends_on or ())[:_MAX_INPUTS]}
    if not wanted:
        return {}
    out = {k: r.name for k, r in log.failed_index.items() if k in wanted}
    for r in log.tasks:
        key = (r.session_id, r.task_id)
        if key in wanted:
            out[key] = r.name
    return out


def _arguments(t: TaskRow, names: dict[tuple[str, str], str]) -> str:
    if t.task_type == "executable" and t.executable:
        return t.executable
    deps = t.depends_on or []
    if not deps:
        return ""
    shown = [f"{d} ({names[(t.session_id, d)]})" if (t.session_id, d) in names else d
             for d in deps[:_MAX_INPUTS]]
    more = f" and {len(deps) - _MAX_INPUTS} more" if len(deps) > _MAX_INPUTS else ""
    return "inputs: " + ", ".join(shown) + more


def _failed_inputs(t: TaskRow, index: dict) -> list[TaskRow]:
    return [r for d in (t.depends_on or ()) if (r := index.get((t.session_id, d))) is not None]


def _root(t: TaskRow, index: dict, memo: dict) -> TaskRow | None:
    """The failed task at the head of ``t``'s chain of dependency failures (None if the
    log lacks it). Iterative, memoised: a chain of 100,000 tasks is walked once."""
    path: list[tuple[str, str]] = []
    cur: TaskRow | None = t
    found: TaskRow | None = None
    while cur is not None:
        key = (cur.session_id, cur.task_id)
        if key in memo:
            found = memo[key]
            break
        if cur.error_type != DEPENDENCY:
            found = cur
            break
        if key in path:  # a cycle cannot happen; a malformed log must not hang us
            break
        path.append(key)
        inputs = _failed_inputs(cur, index)
        # the input whose (root) error type is the one the engine reported, else the first
        want = cur.root_cause_type
        cur = next((r for r in inputs if want and want in (r.error_type, r.root_cause_type)),
                   inputs[0] if inputs else None)
    for key in path:
        memo[key] = found
    return found


def _row(t: TaskRow, index: dict, names: dict, memo: dict) -> dict[str, Any]:
    message, tail = split_stderr(t.error_message)
    retries = t.retry_errors or []
    ran = t.submitted is not None or t.started is not None or bool(retries)
    row: dict[str, Any] = {
        "task_id": t.task_id, "name": t.name, "task_type": t.task_type,
        "arguments": _arguments(t, names), "workflow_id": t.workflow_id,
        "session_id": t.session_id, "node": t.node, "error_type": t.error_type,
        "error_message": message, "stderr_tail": tail,
        "attempts": t.attempts if ran else 0, "timed_out": is_timeout(t.error_type),
        "retry_errors": "; ".join(f"attempt {i}: {et or 'unknown'}"
                                  + (" (timeout)" if is_timeout(et) else "")
                                  for i, (et, _) in enumerate(retries, 1)),
        "failed_inputs": "", "root_task_id": None, "root_task_name": None,
        "root_error_type": None, "root_error_message": None, "root_stderr_tail": None,
        "duration_s": t.duration,
        "ended_at": (datetime.fromtimestamp(t.end, timezone.utc).isoformat(timespec="milliseconds")
                     if t.end is not None else None),
    }
    if t.error_type == DEPENDENCY:
        row["failed_inputs"] = ", ".join(r.task_id for r in _failed_inputs(t, index))
        root = _root(t, index, memo)
        if root is not None:
            r_msg, r_tail = split_stderr(root.error_message)
            row.update(root_task_id=root.task_id, root_task_name=root.name,
                       root_error_type=root.error_type, root_error_message=r_msg,
                       root_stderr_tail=r_tail)
        else:  # the root is not in the log (cut short): what the message says of it
            m = _ROOT_RE.search(message)
            if m:
                row.update(root_task_name=m["name"], root_error_type=m["type"],
                           root_error_message=(m["msg"] or "").strip() or None)
            elif t.root_cause_type:
                row["root_error_type"] = t.root_cause_type
    return row


def failures_csv(rows: list[dict[str, Any]]) -> bytes:
    """The rows as CSV (a header line, then one record per failure; UTF-8)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in FIELDS})
    return buf.getvalue().encode("utf-8")


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    return ("true" if v else "false") if isinstance(v, bool) else v


def failures_json(rows: list[dict[str, Any]]) -> bytes:
    """The rows as a JSON list of objects (the same keys as the CSV columns)."""
    return (json.dumps([{k: r.get(k) for k in FIELDS} for r in rows], indent=1,
                       ensure_ascii=False) + "\n").encode("utf-8")
