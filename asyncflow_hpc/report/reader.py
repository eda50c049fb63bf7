"""Read a RHAPSODY-format JSONL telemetry log into compact per-task rows.

Streams the file line by line and keeps one small :class:`TaskRow` per task (not the lines),
so a log of millions of events fits in memory. Lines that do not parse — the truncated last
line of a killed run, say — are counted and skipped, and so are records whose fields have the
wrong types (an ``event_time`` that is not a number, ...). A file with lines but not one
telemetry record (another JSON file, a journal) raises :class:`LogFormatError`, naming the
first problem. Task ids are per session, so rows are keyed by ``(session_id, task_id)``:
several engines may share one log. Failed tasks also keep their inputs (``depends_on``) and
the errors of their retried attempts, for the failures report (:mod:`.failures`). A pilot
pool's ``PilotDecision`` and ``PilotEnded`` events are kept whole (they are few; :mod:`.pilots`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

__all__ = ["Log", "LogFormatError", "TaskRow", "read_log"]

_FINAL = {"TaskCompleted": "completed", "TaskFailed": "failed", "TaskCanceled": "canceled"}
GIVE_UP_AFTER = 1000  # lines without one telemetry record: not a telemetry log


class LogFormatError(ValueError):
    """The file is not a telemetry log (no line of it is a telemetry record)."""


class _BadRecord(Exception):
    pass


_NUM = (int, float)
_STR = (str,)
# field -> accepted types (None is accepted everywhere)
_EVENT_FIELDS = {"event_type": _STR, "session_id": _STR, "task_id": _STR, "event_time": _NUM,
                 "backend": _STR, "node_id": _STR, "duration_seconds": _NUM,
                 "error_type": _STR, "attributes": (dict,)}
_TASK_ATTRS = {"task_name": _STR, "executable": _STR, "task_type": _STR, "workflow_id": _STR,
               "block_id": _STR, "error_type": _STR, "error_message": _STR}
_RESOURCE_FIELDS = {"cpu_percent": _NUM, "memory_percent": _NUM, "gpu_percent": _NUM}


def _check(d: dict, fields: dict, where: str = "") -> None:
    for key, types in fields.items():
        v = d.get(key)
        if v is not None and (not isinstance(v, types) or isinstance(v, bool)):
            want = "a number" if types is _NUM else "a string" if types is _STR else "an object"
            raise _BadRecord(f"{where}{key} must be {want}, got {json.dumps(v)[:60]}")


def _check_event(d: dict) -> None:
    _check(d, _EVENT_FIELDS)
    if d.get("event_type") is None:
        raise _BadRecord("an event without event_type")
    attrs = d.get("attributes")
    if attrs and d.get("task_id") is not None:
        _check(attrs, _TASK_ATTRS, "attributes.")
    if d.get("event_type") == "ResourceUpdate":
        _check(d, _RESOURCE_FIELDS)


def _check_span(d: dict) -> None:
    attrs = d.get("attributes")
    if attrs is not None and not isinstance(attrs, dict):
        raise _BadRecord("span attributes must be an object")


class TaskRow:
    """What the report needs of one task (or block)."""

    __slots__ = ("session_id", "task_id", "name", "task_type", "workflow_id", "backend", "node",
                 "executable", "block_id", "created", "submitted", "started", "end", "state",
                 "duration", "error_type", "error_message", "attempts", "depends_on",
                 "root_cause_type", "retry_errors")

    def __init__(self, session_id: str, task_id: str) -> None:
        self.session_id = session_id
        self.task_id = task_id
        self.name = task_id
        self.task_type = "function"
        self.workflow_id: str | None = None
        self.backend: str | None = None
        self.node: str | None = None
        self.executable: str | None = None
        self.block_id: str | None = None
        self.created: float | None = None
        self.submitted: float | None = None
        self.started: float | None = None
        self.end: float | None = None
        self.state = "pending"  # pending, running, completed, failed, canceled
        self.duration: float | None = None
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.attempts = 1
        # failed tasks only: their input task ids and the root error's type of a dependency
        # failure; retried tasks only: (error type, message) of each failed attempt
        self.depends_on: list[str] | None = None
        self.root_cause_type: str | None = None
        self.retry_errors: list[tuple[str | None, str | None]] | None = None

    @property
    def run_start(self) -> float | None:
        """When it began to run: TaskStarted; for a task submitted and finished without a
        reported start (an async task that completed inside the submit call), its end —
        a run of zero length. None for a task that never ran."""
        if self.started is not None:
            return self.started
        if self.submitted is not None and self.end is not None:
            return self.end
        return None

    @property
    def ran(self) -> bool:
        return self.task_type != "block" and self.run_start is not None

    @property
    def is_block(self) -> bool:
        return self.task_type == "block"

    def __repr__(self) -> str:
        return f"<TaskRow {self.task_id} {self.name!r} {self.state}>"


@dataclass
class Log:
    """The parts of a telemetry log the report uses."""

    path: str
    tasks: list[TaskRow] = field(default_factory=list)
    sessions: dict[str, dict] = field(default_factory=dict)  # id -> start, end, attributes
    workflow_spans: list[dict] = field(default_factory=list)
    resources: list[dict] = field(default_factory=list)  # ResourceUpdate events
    metrics: list[dict] = field(default_factory=list)
    # a pilot pool's notes (whole event lines): its decisions, and each pilot's end and cost
    pilot_decisions: list[dict] = field(default_factory=list)
    pilots_ended: list[dict] = field(default_factory=list)
    lines: int = 0
    bad_lines: int = 0
    truncated: bool = False  # no SessionEnded for some session: the run did not shut down
    # every failed task of the log, kept by filter_workflow: a root cause in another workflow
    failed_index: dict[tuple[str, str], TaskRow] = field(default_factory=dict)

    def filter_workflow(self, workflow_id: str) -> Log:
        """Only the tasks (and workflow spans) of one workflow; the sessions, resources and
        pilots are the run's (shared by its workflows)."""
        return Log(self.path,
                   tasks=[t for t in self.tasks if t.workflow_id == workflow_id],
                   sessions=self.sessions,
                   workflow_spans=[s for s in self.workflow_spans
                                   if s.get("attributes", {}).get("workflow_id") == workflow_id],
                   resources=self.resources, metrics=self.metrics,
                   pilot_decisions=self.pilot_decisions, pilots_ended=self.pilots_ended,
                   lines=self.lines,
                   bad_lines=self.bad_lines, truncated=self.truncated,
                   failed_index=self.failed_index)

    @property
    def workflow_ids(self) -> list[str]:
        return sorted({t.workflow_id for t in self.tasks if t.workflow_id is not None})


def read_log(path: str | os.PathLike, workflow: str | None = None) -> Log:
    """Parse ``path``; with ``workflow``, keep only that workflow's tasks."""
    path = os.fspath(path)
    log = Log(path)
    rows: dict[tuple[str, str], TaskRow] = {}
    loads = json.loads
    first_problem = ""
    records = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if not records and log.lines >= GIVE_UP_AFTER:
                break  # a large file of another kind: no need to read it all to say so
            log.lines += 1
            try:
                d = loads(raw)
            except (ValueError, RecursionError):
                log.bad_lines += 1
                first_problem = first_problem or f"line {log.lines} is not JSON"
                continue
            if not isinstance(d, dict):
                log.bad_lines += 1
                first_problem = first_problem or f"line {log.lines} is not a JSON object"
                continue
            section = d.get("section")
            try:
                if section == "event":
                    _check_event(d)
                    _event(d, rows, log)
                elif section == "span":
                    _check_span(d)
                    if d.get("name") == "workflow":
                        log.workflow_spans.append(d)
                elif section == "metric":
                    log.metrics.append(d)
                elif not isinstance(section, str):
                    raise _BadRecord("no section (event, span or metric)")
                else:  # a section of a later version: skipped, but no proof of a telemetry log
                    first_problem = first_problem or (f"line {log.lines}: unknown section "
                                                      f"{json.dumps(section)[:40]}")
                    continue
            except _BadRecord as exc:
                log.bad_lines += 1
                first_problem = first_problem or f"line {log.lines}: {exc}"
                continue
            records += 1
    if log.lines and not records:
        raise LogFormatError(f"{path} is not an asyncflow-hpc telemetry log: no line of it is a "
                             f"telemetry record ({first_problem})")
    log.tasks = list(rows.values())
    log.failed_index = {k: r for k, r in rows.items() if r.state == "failed"}
    _fill_nodes(log)
    log.truncated = any("end" not in s for s in log.sessions.values())
    if workflow is not None:
        log = log.filter_workflow(workflow)
    return log


def _fill_nodes(log: Log) -> None:
    """A task that ran without its backend naming the node (an async task finished inside
    the submit call) ran where that backend runs, if the backend has one host."""
    hosts: dict[tuple[str, str], str] = {}
    for sid, info in log.sessions.items():
        backends = (info.get("attributes") or {}).get("backends")
        if isinstance(backends, dict):
            for name, desc in backends.items():
                if isinstance(desc, dict) and desc.get("host"):
                    hosts[(sid, name)] = desc["host"]
    if not hosts:
        return
    for t in log.tasks:
        if t.node is None and t.submitted is not None:
            t.node = hosts.get((t.session_id, t.backend or ""))


def _event(d: dict, rows: dict, log: Log) -> None:
    etype = d.get("event_type")
    sid = d.get("session_id") or ""
    tid = d.get("task_id")
    t = d.get("event_time")
    if tid is None:
        if etype == "ResourceUpdate":
            log.resources.append(d)
        elif etype == "SessionStarted":
            log.sessions.setdefault(sid, {})["start"] = t
            log.sessions[sid]["attributes"] = d.get("attributes") or {}
        elif etype == "SessionEnded":
            log.sessions.setdefault(sid, {})["end"] = t
        elif etype == "PilotDecision":
            log.pilot_decisions.append(d)
        elif etype == "PilotEnded":
            log.pilots_ended.append(d)
        return
    key = (sid, tid)
    row = rows.get(key)
    if row is None:
        row = rows[key] = TaskRow(sid, tid)
        log.sessions.setdefault(sid, {})
        attrs = d.get("attributes") or {}
        row.name = attrs.get("task_name") or attrs.get("executable") or tid
        row.task_type = attrs.get("task_type") or "function"
        row.workflow_id = attrs.get("workflow_id")
        row.executable = attrs.get("executable")
        row.block_id = attrs.get("block_id")
        row.backend = d.get("backend")
    if etype == "TaskCreated":
        row.created = t
    elif etype == "TaskSubmitted":
        row.submitted = t
    elif etype == "TaskStarted":
        row.started = t
        row.state = "running"
        row.node = d.get("node_id") or row.node
    elif etype == "TaskQueued":
        ex = (d.get("attributes") or {}).get("executable")
        if ex:
            row.executable = ex
    elif etype in _FINAL:
        row.state = _FINAL[etype]
        row.end = t
        row.duration = d.get("duration_seconds")
        row.node = d.get("node_id") or row.node
        if etype == "TaskFailed":
            attrs = d.get("attributes") or {}
            row.error_type = d.get("error_type") or attrs.get("error_type")
            row.error_message = attrs.get("error_message")
            deps = attrs.get("depends_on")
            if isinstance(deps, list) and deps:
                row.depends_on = [x for x in deps if isinstance(x, str)]
            root = attrs.get("root_cause_type")
            row.root_cause_type = root if isinstance(root, str) else None
    elif etype == "TaskRetried":
        row.attempts += 1
        row.started = None
        row.state = "pending"
        attrs = d.get("attributes") or {}
        if row.retry_errors is None:
            row.retry_errors = []
        row.retry_errors.append((d.get("error_type") or attrs.get("error_type"),
                                 attrs.get("error_message")))
