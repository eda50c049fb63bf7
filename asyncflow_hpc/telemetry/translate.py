"""Turn buffered engine events into RHAPSODY JSONL lines, spans and metrics.

Runs in the flush timer, not in the observer: the observer only appends
``type, time, record, error`` to a flat list. Per task the constant parts of its lines
(session, backend, task id, attributes, span ids) are encoded once, into a ``%`` template
that each of its events fills with four values; a task span line is one more template.

Event lines (keys in this order): ``event_id, event_type, event_time, emit_time, session_id,
backend, task_id, node_id, attributes[, duration_seconds][, error_type], trace_id, span_id, name,
section``. ``name`` repeats the event type, as in RHAPSODY. ``duration_seconds`` runs from
TaskStarted to the final event; as in RHAPSODY it is 0 with ``incomplete_lifecycle: true`` in
the attributes when no start was reported (an async task that finished without suspending
runs inside the backend's submit call; a task that failed before it was submitted never ran).
Times are seconds since the epoch with microseconds.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..events import EventType
from ..tasks import TaskKind
from .metrics import Metrics
from .spans import SPAN_LINE, Span, SpanFactory

__all__ = ["Translator", "attrs_of", "error_fields"]

_CREATED, _RESOLVED, _QUEUED, _SUBMITTED, _STARTED = (
    EventType.CREATED, EventType.RESOLVED, EventType.QUEUED, EventType.SUBMITTED,
    EventType.STARTED)
_COMPLETED, _FAILED, _CANCELED, _RETRIED = (
    EventType.COMPLETED, EventType.FAILED, EventType.CANCELED, EventType.RETRIED)
_BLOCK, _EXECUTABLE = TaskKind.BLOCK, TaskKind.EXECUTABLE
_dumps = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode
# a task's template: the event id's prefix, head, attributes and ids are filled in once
_TEMPLATE = ('{"event_id":"%s%%08x","event_type":"%%s","event_time":%%.6f,"emit_time":%%s,%s,'
             '"node_id":%%s,"attributes":%s,%s,"name":"%%s","section":"event"}\n')
# a final event: attributes are followed by duration_seconds (and error_type)
_FINAL_LINE = ('{"event_id":"%s%08x","event_type":"%s","event_time":%.6f,"emit_time":%s,%s,'
               '"node_id":%s,"attributes":%s%s,%s,"name":"%s","section":"event"}\n')
_STATUS = {_COMPLETED: "completed", _FAILED: "failed", _CANCELED: "canceled"}
MAX_MESSAGE = 4000


def attrs_of(rec: Any, command: Any = None) -> dict:
    """Event attributes of a task record (``command``: an executable's command line)."""
    if command is not None:
        executable = command if isinstance(command, str) else " ".join(command)
    else:
        executable = rec.name
    attrs = {
        "executable": executable,
        "task_type": rec.kind.value,
        "task_name": rec.name,
        "workflow_id": rec.workflow_id,
        "depends_on": list(rec.dependencies),
    }
    if rec.parent is not None:
        attrs["block_id"] = rec.parent.uid
    return attrs


def error_fields(error: BaseException | None) -> dict:
    if error is None:
        return {"error_type": "unknown"}
    msg = str(error)
    out = {"error_type": type(error).__name__,
           "error_message": msg if len(msg) <= MAX_MESSAGE else msg[:MAX_MESSAGE] + "…"}
    root = getattr(error, "root_cause", None)
    if isinstance(root, BaseException):
        out["root_cause_type"] = type(root).__name__
    return out


def _fmt(text: str) -> str:
    return text.replace("%", "%%") if "%" in text else text


class _Track:
    """What one unfinished task needs between its events."""

    __slots__ = ("span", "head", "attrs_json", "tpl", "node", "submitted", "started", "block",
                 "workflow", "command")

    def __init__(self, span: Span, head: str, attrs_json: str, tpl: str, block: bool,
                 workflow: Any, command: Any) -> None:
        self.span = span
        self.head = head
        self.attrs_json = attrs_json
        self.tpl = tpl
        self.node = "null"
        self.submitted = 0.0
        self.started = 0.0
        self.block = block
        self.workflow = workflow
        self.command = command


class _Workflow:
    __slots__ = ("span", "end", "counts")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.end = 0.0
        self.counts = {"completed": 0, "failed": 0, "canceled": 0}


class Translator:
    """Stateful: feed events in the order the engine emitted them."""

    def __init__(self, session_id: str, factory: SpanFactory, session_span: Span,
                 metrics: Metrics) -> None:
        self.session_id = session_id
        self.factory = factory
        self.session_span = session_span
        self.metrics = metrics
        self.commands: dict[str, Any] = {}  # executables' command lines, from the observer
        self._sid = _dumps(session_id)
        self._live: dict[str, _Track] = {}
        self._workflows: dict[str, _Workflow] = {}
        self._heads: dict[Any, str] = {}
        self._attr_heads: dict[tuple, str] = {}
        self._nodes: dict[Any, str] = {None: "null"}
        self._prefix = os.urandom(12).hex()
        self._count = 0

    # ------------------------------------------------------------------ general lines
    def event_line(self, etype: str, t: float, emit: float, *, backend: str | None,
                   task_id: str | None = None, node_id: str | None = None,
                   attributes: dict | None = None, span: Span | None = None,
                   **extra: Any) -> str:
        """One event line built the general way (session and rare events)."""
        self._count += 1
        d = {"event_id": f"{self._prefix}{self._count:08x}", "event_type": etype,
             "event_time": round(t, 6), "emit_time": round(emit, 6),
             "session_id": self.session_id, "backend": backend, "task_id": task_id,
             "node_id": node_id, "attributes": attributes or {}, **extra}
        span = span or self.session_span
        return f'{_dumps(d)[:-1]},{span.ids_json},"name":"{etype}","section":"event"}}\n'

    # ------------------------------------------------------------------ per task
    def _attrs_json(self, rec: Any, command: Any) -> str:
        if command is not None:
            return _dumps(attrs_of(rec, command))
        key = (rec.name, rec.kind, rec.workflow_id)
        head = self._attr_heads.get(key)
        if head is None:
            if len(self._attr_heads) > 10_000:
                self._attr_heads.clear()
            full = _dumps({"executable": rec.name, "task_type": rec.kind.value,
                           "task_name": rec.name, "workflow_id": rec.workflow_id,
                           "depends_on": []})
            head = self._attr_heads[key] = full[:-3]  # up to '"depends_on":'
        deps = rec.dependencies
        tail = "]" if not deps else _dumps(deps)[1:]
        parent = rec.parent
        if parent is not None:
            return f'{head}[{tail},"block_id":{_dumps(parent.uid)}}}'
        return f"{head}[{tail}}}"

    def _open(self, rec: Any, t: float) -> _Track:
        block = rec.kind is _BLOCK
        wf = None
        wid = rec.workflow_id
        if wid is not None:
            wf = self._workflows.get(wid)
            if wf is None:
                wf = self._workflows[wid] = _Workflow(self.factory.open(
                    "workflow", self.session_span, t,
                    {"workflow_id": wid, "session_id": self.session_id}))
        parent = None
        parent_rec = rec.parent
        if parent_rec is not None:
            ptrack = self._live.get(parent_rec.uid)
            if ptrack is not None:
                parent = ptrack.span
        if parent is None:
            parent = wf.span if wf is not None else self.session_span
        command = self.commands.pop(rec.uid, None)
        attrs_json = self._attrs_json(rec, command)
        span_attrs = None
        if self.factory.bridge is not None:
            span_attrs = {"session_id": self.session_id, "backend": rec.backend,
                          "task_id": rec.uid, **attrs_of(rec, command)}
        span = self.factory.open("block" if block else "task", parent, t, span_attrs)
        bhead = self._heads.get(rec.backend)
        if bhead is None:
            bhead = self._heads[rec.backend] = (
                f'"session_id":{self._sid},"backend":{_dumps(rec.backend)},"task_id":')
        head = f'{bhead}{_dumps(rec.uid)}'
        tpl = _TEMPLATE % (self._prefix, _fmt(head), _fmt(attrs_json), span.ids_json)
        tr = self._live[rec.uid] = _Track(span, head, attrs_json, tpl, block, wf, command)
        return tr

    def _set_command(self, rec: Any, tr: _Track, command: Any) -> None:
        tr.command = command
        tr.attrs_json = self._attrs_json(rec, command)
        tr.tpl = _TEMPLATE % (self._prefix, _fmt(tr.head), _fmt(tr.attrs_json),
                              tr.span.ids_json)
        if tr.span.attributes is not None:
            tr.span.attributes["executable"] = attrs_of(rec, command)["executable"]

    # ------------------------------------------------------------------ the hot loop
    def feed(self, items: list, emit: float, out: list[str]) -> None:
        """Translate ``items`` (flat: type, time, record, error, ...) into lines in ``out``."""
        live = self._live
        app = out.append
        nodes = self._nodes
        count = self._count
        emit_s = "%.6f" % emit  # noqa: UP031 - % templates are the fast path here
        metrics = self.metrics
        commands = self.commands
        for i in range(0, len(items), 4):
            etype = items[i]
            t = items[i + 1]
            rec = items[i + 2]
            tr = live.get(rec.uid)
            if tr is None:
                tr = self._open(rec, t)
            if etype is _CREATED or etype is _RESOLVED or etype is _QUEUED:
                if commands and etype is _QUEUED and rec.uid in commands:
                    self._set_command(rec, tr, commands.pop(rec.uid))
                count += 1
                app(tr.tpl % (count, etype, t, emit_s, "null", etype))
            elif etype is _SUBMITTED:
                tr.submitted = t
                if not tr.block:
                    metrics.submitted += 1
                count += 1
                app(tr.tpl % (count, etype, t, emit_s, "null", etype))
            elif etype is _STARTED:
                tr.started = t
                if not tr.block:
                    metrics.started += 1
                    metrics.running += 1
                node = nodes.get(rec.node)
                if node is None:
                    node = nodes[rec.node] = _dumps(rec.node)
                tr.node = node
                count += 1
                app(tr.tpl % (count, etype, t, emit_s, node, etype))
            elif etype is _COMPLETED or etype is _FAILED or etype is _CANCELED:
                self._count = count
                self._final(etype, t, emit_s, rec, tr, items[i + 3], app)
                count = self._count
            else:  # TaskRetried, and whatever types a newer engine adds
                self._count = count
                app(self._other(etype, t, emit, rec, tr, items[i + 3]))
                count = self._count
        self._count = count

    def _final(self, etype: str, t: float, emit_s: str, rec: Any, tr: _Track,
               error: BaseException | None, app: Any) -> None:
        started = tr.started
        duration = t - started if started else 0.0
        if duration < 0.0:
            duration = 0.0
        node = tr.node
        if rec.node is not None and node == "null":
            node = self._nodes.get(rec.node) or _dumps(rec.node)
        status = _STATUS[etype]
        attrs_json = tr.attrs_json
        if not started:
            attrs_json = attrs_json[:-1] + ',"incomplete_lifecycle":true}'
        ef = None
        if etype is _FAILED:
            ef = error_fields(error)
            attrs = attrs_of(rec, tr.command)
            attrs.update(ef)
            if not started:
                attrs["incomplete_lifecycle"] = True
            attrs_json = _dumps(attrs)
            tail = f',"duration_seconds":{duration:.6f},"error_type":{_dumps(ef["error_type"])}'
            code, desc = "ERROR", ef["error_type"]
        else:
            tail = f',"duration_seconds":{duration:.6f}'
            code, desc = ("OK", None) if etype is _COMPLETED else ("ERROR", None)
        self._count += 1
        app(_FINAL_LINE % (
                self._prefix, self._count, etype, t, emit_s, tr.head, node, attrs_json, tail,
                tr.span.ids_json, etype))
        # the task's span
        span = tr.span
        span_attrs = (f'{{{tr.head},{tr.attrs_json[1:-1]},"status":"{status}","node_id":{node},'
                      f'"duration_seconds":{duration:.6f},"attempts":{rec.attempts}')
        if ef is not None:
            span_attrs = f"{span_attrs},{_dumps(ef)[1:-1]}}}"
        else:
            span_attrs += "}"
        if span.otel is not None:
            extra = {"status": status, "node_id": rec.node, "duration_seconds": duration,
                     "attempts": rec.attempts, **(ef or {})}
            self.factory.end(span, t, code, desc, extra)
        start_ns, end_ns = int(span.start * 1e9), int(t * 1e9)
        app(SPAN_LINE % (span.name, span.span_hex, span.trace_hex, span.parent_json, start_ns,
                         end_ns, span.start, t, (end_ns - start_ns) / 1e6, code,
                         "null" if desc is None else _dumps(desc), span_attrs))
        del self._live[rec.uid]
        if not tr.block:
            self.metrics.ended(status, bool(started), duration)
        wf = tr.workflow
        if wf is not None:
            wf.counts[status] += 1
            if t > wf.end:
                wf.end = t

    def _other(self, etype: str, t: float, emit: float, rec: Any, tr: _Track,
               error: BaseException | None) -> str:
        attrs = attrs_of(rec, tr.command)
        extra: dict = {}
        if etype is _RETRIED:
            if tr.started and not tr.block:
                self.metrics.running -= 1
            tr.started = 0.0
            ef = error_fields(error)
            attrs.update(ef)
            attrs["attempt"] = rec.attempts
            extra["error_type"] = ef["error_type"]
        elif error is not None:
            attrs.update(error_fields(error))
        return self.event_line(etype, t, emit, backend=rec.backend, task_id=rec.uid,
                               node_id=rec.node, attributes=attrs, span=tr.span, **extra)

    # ------------------------------------------------------------------ the end
    def finish(self, now: float, out: list[str]) -> None:
        """Close what is still open: unfinished tasks (if any), then the workflow spans."""
        for tr in list(self._live.values()):
            self.factory.end(tr.span, now, "UNSET", None, {"status": "unfinished"})
            out.append(SPAN_LINE % (
                tr.span.name, tr.span.span_hex, tr.span.trace_hex, tr.span.parent_json,
                int(tr.span.start * 1e9), int(now * 1e9), tr.span.start, now,
                (now - tr.span.start) * 1e3, "UNSET", "null",
                f'{{{tr.head},{tr.attrs_json[1:-1]},"status":"unfinished"}}'))
        self._live.clear()
        for wf in self._workflows.values():
            failed = wf.counts["failed"]
            attrs = {f"tasks_{k}": v for k, v in wf.counts.items()}
            code, desc = ("ERROR", f"{failed} task(s) failed") if failed else ("OK", None)
            out.append(self.factory.close(wf.span, wf.end or now, code, desc, attrs))
        self._workflows.clear()
