"""Turn buffered engine events into RHAPSODY JSONL lines, spans and metrics.

Runs in the flush timer, not in the observer: the observer only appends
``(type, time, record, error)`` to a flat list. Per task the constant parts of its lines
(session, backend, task id, attributes, span ids) are encoded once and reused by each of its
events, so a line costs one ``%`` format.

Event lines (keys in this order): ``event_id, event_type, event_time, emit_time, session_id,
backend, task_id, node_id, attributes[, duration_seconds][, error_type], trace_id, span_id, name,
section``. ``name`` repeats the event type, as in RHAPSODY. ``duration_seconds`` runs from
TaskStarted (or, for a task that finished without reporting a start, from TaskSubmitted, with
``incomplete_lifecycle`` set) to the final event.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..events import EventType
from ..tasks import TaskKind
from .metrics import Metrics
from .spans import Span, SpanFactory

__all__ = ["Translator", "attrs_of", "error_fields"]

_CREATED, _RESOLVED, _QUEUED, _SUBMITTED, _STARTED = (
    EventType.CREATED, EventType.RESOLVED, EventType.QUEUED, EventType.SUBMITTED,
    EventType.STARTED)
_COMPLETED, _FAILED, _CANCELED, _RETRIED = (
    EventType.COMPLETED, EventType.FAILED, EventType.CANCELED, EventType.RETRIED)
_BLOCK, _EXECUTABLE = TaskKind.BLOCK, TaskKind.EXECUTABLE
_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
_LINE = ('{"event_id":"%s%08x","event_type":"%s","event_time":%r,"emit_time":%s,%s,'
         '"node_id":%s,"attributes":%s,%s,"name":"%s","section":"event"}\n')
_STATUS = {_COMPLETED: "completed", _FAILED: "failed", _CANCELED: "canceled"}
MAX_MESSAGE = 4000


def attrs_of(rec: Any, command: Any = None) -> dict:
    """Event attributes of a task record."""
    kind = rec.kind
    if command is not None:
        executable = command if isinstance(command, str) else " ".join(command)
    else:
        executable = rec.name
    attrs = {
        "executable": executable,
        "task_type": kind.value,
        "task_name": rec.name,
        "workflow_id": rec.workflow_id,
        "depends_on": rec.dependencies,
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


class _Track:
    """What one unfinished task needs between its events."""

    __slots__ = ("span", "head", "attrs", "attrs_json", "submitted", "started", "block",
                 "workflow")

    def __init__(self, span: Span, head: str, attrs: dict, block: bool, workflow: Any) -> None:
        self.span = span
        self.head = head
        self.attrs = attrs
        self.attrs_json = _dumps(attrs)
        self.submitted = 0.0
        self.started = 0.0
        self.block = block
        self.workflow = workflow


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
        self._nodes: dict[Any, str] = {None: "null"}
        self._prefix = os.urandom(12).hex()
        self._count = 0

    # ------------------------------------------------------------------ events
    def event_line(self, etype: str, t: float, emit: float, *, backend: str | None,
                   task_id: str | None = None, node_id: str | None = None,
                   attributes: dict | None = None, span: Span | None = None,
                   **extra: Any) -> str:
        """One event line built the slow, general way (session and rare events)."""
        self._count += 1
        d = {"event_id": f"{self._prefix}{self._count:08x}", "event_type": etype,
             "event_time": t, "emit_time": emit, "session_id": self.session_id,
             "backend": backend, "task_id": task_id, "node_id": node_id,
             "attributes": attributes or {}, **extra}
        span = span or self.session_span
        return f'{_dumps(d)[:-1]},{span.ids_json},"name":"{etype}","section":"event"}}\n'

    def _open(self, rec: Any, t: float) -> _Track:
        block = rec.kind is _BLOCK
        parent_rec = rec.parent
        wf = None
        wid = rec.workflow_id
        if wid is not None:
            wf = self._workflows.get(wid)
            if wf is None:
                wf = self._workflows[wid] = _Workflow(self.factory.open(
                    "workflow", self.session_span, t,
                    {"workflow_id": wid, "session_id": self.session_id}))
        parent = None
        if parent_rec is not None:
            ptrack = self._live.get(parent_rec.uid)
            if ptrack is not None:
                parent = ptrack.span
        if parent is None:
            parent = wf.span if wf is not None else self.session_span
        attrs = attrs_of(rec, self.commands.pop(rec.uid, None))
        span_attrs = {"session_id": self.session_id, "backend": rec.backend,
                      "task_id": rec.uid, **attrs}
        span = self.factory.open("block" if block else "task", parent, t, span_attrs)
        head = f'"session_id":{self._sid},"backend":{_dumps(rec.backend)},"task_id":"{rec.uid}"'
        tr = self._live[rec.uid] = _Track(span, head, attrs, block, wf)
        return tr

    def feed(self, items: list, emit: float, out: list[str]) -> None:
        """Translate ``items`` (flat: type, time, record, error, ...) into lines in ``out``."""
        live = self._live
        app = out.append
        nodes = self._nodes
        prefix = self._prefix
        count = self._count
        emit_s = repr(emit)
        metrics = self.metrics
        for i in range(0, len(items), 4):
            etype = items[i]
            t = items[i + 1]
            rec = items[i + 2]
            tr = live.get(rec.uid)
            if tr is None:
                tr = self._open(rec, t)
            if etype is _RESOLVED or etype is _CREATED:
                count += 1
                app(_LINE % (prefix, count, etype, t, emit_s, tr.head, "null", tr.attrs_json,
                             tr.span.ids_json, etype))
            elif etype is _QUEUED or etype is _SUBMITTED:
                if etype is _QUEUED:
                    if rec.kind is _EXECUTABLE and rec.uid in self.commands:
                        self._set_command(tr, self.commands.pop(rec.uid))
                else:
                    tr.submitted = t
                    if not tr.block:
                        metrics.submitted += 1
                count += 1
                app(_LINE % (prefix, count, etype, t, emit_s, tr.head, "null", tr.attrs_json,
                             tr.span.ids_json, etype))
            elif etype is _STARTED:
                tr.started = t
                if not tr.block:
                    metrics.started += 1
                    metrics.running += 1
                node = nodes.get(rec.node)
                if node is None:
                    node = nodes[rec.node] = _dumps(rec.node)
                count += 1
                app(_LINE % (prefix, count, etype, t, emit_s, tr.head, node, tr.attrs_json,
                             tr.span.ids_json, etype))
            elif etype is _COMPLETED or etype is _FAILED or etype is _CANCELED:
                self._count = count
                self._final(etype, t, emit_s, rec, tr, items[i + 3], app)
                count = self._count
            else:  # TaskRetried, and whatever types a newer engine adds
                self._count = count
                app(self._other(etype, t, emit, rec, tr, items[i + 3]))
                count = self._count
        self._count = count

    def _set_command(self, tr: _Track, command: Any) -> None:
        tr.attrs["executable"] = command if isinstance(command, str) else " ".join(command)
        tr.attrs_json = _dumps(tr.attrs)
        tr.span.attributes["executable"] = tr.attrs["executable"]

    def _final(self, etype: str, t: float, emit_s: str, rec: Any, tr: _Track,
               error: BaseException | None, app: Any) -> None:
        metrics = self.metrics
        started = tr.started
        start = started or tr.submitted
        duration = t - start if start else 0.0
        if duration < 0:
            duration = 0.0
        node = self._nodes.get(rec.node)
        if node is None:
            node = self._nodes[rec.node] = _dumps(rec.node)
        attrs_json = tr.attrs_json
        if not started:
            attrs_json = attrs_json[:-1] + ',"incomplete_lifecycle":true}'
        status = _STATUS[etype]
        span_extra: dict = {"status": status, "node_id": rec.node,
                            "duration_seconds": duration, "attempts": rec.attempts}
        if etype is _FAILED:
            ef = error_fields(error)
            attrs = dict(tr.attrs, **ef)
            if not started:
                attrs["incomplete_lifecycle"] = True
            attrs_json = (f'{_dumps(attrs)},"duration_seconds":{duration!r},'
                          f'"error_type":{_dumps(ef["error_type"])}')
            span_extra.update(ef)
            code, desc = "ERROR", ef["error_type"]
        else:
            attrs_json = f'{attrs_json},"duration_seconds":{duration!r}'
            code, desc = ("OK", None) if etype is _COMPLETED else ("ERROR", None)
        self._count += 1
        app(_LINE % (self._prefix, self._count, etype, t, emit_s, tr.head, node, attrs_json,
                     tr.span.ids_json, etype))
        app(self.factory.close(tr.span, t, code, desc, span_extra))
        del self._live[rec.uid]
        if not tr.block:
            if started:
                metrics.running -= 1
            metrics.duration_count += 1
            metrics.duration_sum += duration
            if etype is _COMPLETED:
                metrics.completed += 1
            elif etype is _FAILED:
                metrics.failed += 1
            else:
                metrics.canceled += 1
        wf = tr.workflow
        if wf is not None:
            wf.counts[status] += 1
            if t > wf.end:
                wf.end = t

    def _other(self, etype: str, t: float, emit: float, rec: Any, tr: _Track,
               error: BaseException | None) -> str:
        attrs = dict(tr.attrs)
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
        """Close what is still open: unfinished tasks (if any), then workflow spans."""
        for tr in list(self._live.values()):
            out.append(self.factory.close(tr.span, now, "UNSET", None, {"status": "unfinished"}))
        self._live.clear()
        for wf in self._workflows.values():
            failed = wf.counts["failed"]
            attrs = {f"tasks_{k}": v for k, v in wf.counts.items()}
            code, desc = ("ERROR", f"{failed} task(s) failed") if failed else ("OK", None)
            out.append(self.factory.close(wf.span, wf.end or now, code, desc, attrs))
        self._workflows.clear()
