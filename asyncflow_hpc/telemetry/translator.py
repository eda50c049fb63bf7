"""RHAPSODY JSONL lines from the rows of the engine's tape: the one translator.

It runs in the telemetry worker process (:mod:`.worker`), or on a thread of the campaign's
process when there is no worker (:class:`.writer.ThreadWorker`); OpenTelemetry spans are
made from its span lines (:meth:`.otel.OtelBridge.replay`). Items come from
:mod:`.rows`: batches of rows, and events that need more than a row.

The translator remembers which steps it has written per task and writes the new ones, so a
step reached again (a retried task's queued, submitted, started) is written again. Per task
the constant parts of its lines (session, backend, task id, attributes, span ids) are
encoded once with :mod:`json` (so user strings are escaped correctly) and every event fills
in its type, times, node and event id. Failures, cancellations, retries, the session's own
events and the closing spans are written the general way (:mod:`.rare_lines`).

Standard library and sibling modules only: the worker loads this file by path, without
importing ``asyncflow_hpc``.
"""

from __future__ import annotations

import os
import random
from typing import Any

try:
    from . import metrics, rare_lines, text
except ImportError:  # loaded by path in the worker process
    import metrics  # type: ignore[no-redef]
    import rare_lines  # type: ignore[no-redef]
    import text  # type: ignore[no-redef]

Metrics, RareLines = metrics.Metrics, rare_lines.RareLines
CREATED, RESOLVED, QUEUED, SUBMITTED, STARTED, COMPLETED = (
    text.CREATED, text.RESOLVED, text.QUEUED, text.SUBMITTED, text.STARTED, text.COMPLETED)
dumps, dumps_str, enc, fmt = text.dumps, text.dumps_str, text.enc, text.fmt

__all__ = ["Translator"]

_rand = random.Random(os.urandom(16))


class OpenTask:
    """What one unfinished task needs between its rows."""

    __slots__ = ("uid", "uidj", "name", "kind", "wid", "deps", "parent", "command", "bhead",
                 "attrs", "shape", "span_hex", "parent_json", "start", "started", "node",
                 "block", "wf", "seen", "resolved", "queued", "submitted", "run")


class OpenWorkflow:
    __slots__ = ("span_hex", "start", "end", "counts")

    def __init__(self, span_hex: str, start: float) -> None:
        self.span_hex = span_hex
        self.start = start
        self.end = 0.0
        self.counts = {"completed": 0, "failed": 0, "canceled": 0}


_EMIT = "\x00"  # where a batch's emit time goes in a cached template
# the steps a row can show, in life-cycle order: the bits of a template's key
_C, _R, _Q, _S, _ST, _D, _RAN = 1, 2, 4, 8, 16, 32, 64
MAX_SHAPES = 4096  # shared shapes kept (templates per shape and set of steps); beyond: per task


class Translator(RareLines):
    """Stateful: feed the worker's items in the order they were packed, then take the lines.

    A row says which steps a task has reached and when; the translator remembers what it has
    written per task and writes the steps that are new, in life-cycle order (so a task's
    lines are always in order; lines of different tasks in one batch are grouped by task).
    A task's new lines, span line included, are made by one ``%`` (in C) with a template per
    *shape* (backend, attributes, kind) and set of steps, made on first use: tasks of one
    function in one workflow share their templates, so the per-task work is picking the
    values."""

    def __init__(self, session_id: str, trace_hex: str, session_span_hex: str,
                 metrics: Metrics | None = None, prefix: str | None = None) -> None:
        self.session_id = session_id
        self.trace_hex = trace_hex
        self.session_span_hex = session_span_hex
        self.metrics = metrics if metrics is not None else Metrics(session_id)
        self.prefix = prefix or os.urandom(12).hex()
        self._sid = dumps(session_id)
        self._count = 0
        self._live: dict[str, OpenTask] = {}
        self._workflows: dict[Any, OpenWorkflow] = {}
        self._bheads: dict[Any, str] = {}
        self._attr_cache: dict[tuple, str] = {}
        self._nodes: dict[Any, str] = {None: "null"}
        self._shapes: dict[tuple, int] = {}
        self._shape_of: list[tuple] = []
        self._templates: dict[int, str] = {}  # shape * 128 + steps -> template
        self._batch: dict[int, str] = {}  # the same with this batch's emit time filled in
        self._btemplates: dict[int, bytes] = {}  # the same as bytes
        self._bbatch: dict[int, bytes] = {}
        self._bnodes: dict[Any, bytes] = {}
        self._emit_s = ""
        self._bits = _rand.getrandbits
        self._out: list[bytes] = []  # the lines made since the last lines() call
        self._span_ids: dict[str, str] = {}  # blocks' span ids, for children seen apart
        self._common: dict[tuple, tuple] = {}  # (name, kind, wid, backend) -> shape, workflow

    # ------------------------------------------------------------------ per task
    def _attrs(self, t: OpenTask) -> str:
        """The task's attributes as JSON; the same string object for tasks that share them."""
        if t.command is not None:
            d = {"executable": t.command, "task_type": t.kind, "task_name": t.name,
                 "workflow_id": t.wid, "depends_on": list(t.deps)}
            if t.parent is not None:
                d["block_id"] = t.parent
            return dumps(d)
        key = (t.name, t.kind, t.wid)
        base = self._attr_cache.get(key)
        if base is None:
            if len(self._attr_cache) > 10_000:
                self._attr_cache.clear()
            base = self._attr_cache[key] = dumps(
                {"executable": t.name, "task_type": t.kind, "task_name": t.name,
                 "workflow_id": t.wid, "depends_on": []})
        if not t.deps and t.parent is None:
            return base
        head = base[:-3]  # up to '"depends_on":'
        tail = "]" if not t.deps else dumps(t.deps)[1:]
        if t.parent is not None:
            return f'{head}[{tail},"block_id":{dumps(t.parent)}}}'
        return f"{head}[{tail}}}"

    def _set_attrs(self, t: OpenTask) -> None:
        t.attrs = attrs = self._attrs(t)
        if t.deps or t.parent is not None or t.command is not None:
            t.shape = -1  # attributes of its own: templates made for this task only
            return
        key = (t.bhead, attrs, t.block)
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shape_of) >= MAX_SHAPES:
                t.shape = -1
                return
            shape = self._shapes[key] = len(self._shape_of)
            self._shape_of.append(key)
        t.shape = shape

    def _open(self, uid: str, static: tuple | None, kind: str, parent: str | None,
              time: float) -> OpenTask:
        t = OpenTask()
        if static is None:  # first seen after its creation (should not happen)
            static = (uid, None, None, ())
        t.uid = uid
        t.uidj = dumps_str(uid)
        t.name, wid, backend, t.deps = static
        t.wid = wid
        t.kind = kind
        t.parent = parent
        t.command = None
        t.block = kind == "block"
        t.wf = wf = self._workflow(wid, time)
        span_ids = self._span_ids
        if parent is not None:
            pt = self._live.get(parent)
            if pt is not None:
                pspan = pt.span_hex
            else:  # a block not written yet (or ended): the id it will have (or had)
                pspan = span_ids.get(parent)
                if pspan is None:
                    pspan = span_ids[parent] = hex(self._bits(64) or 1)
        else:
            pspan = wf.span_hex if wf is not None else self.session_span_hex
        t.parent_json = pspan
        t.span_hex = (span_ids.pop(uid, None) if span_ids else None) or hex(self._bits(64) or 1)
        t.bhead = self._bhead(backend)
        self._set_attrs(t)
        t.start = time
        t.started = 0.0
        t.node = "null"
        t.seen = False
        t.resolved = t.queued = t.submitted = t.run = 0.0
        self._live[uid] = t
        return t

    def _bhead(self, backend: Any) -> str:
        """The constant start of a task's identity in its lines, per backend."""
        bhead = self._bheads.get(backend)
        if bhead is None:
            bhead = self._bheads[backend] = (
                f'"session_id":{self._sid},"backend":{dumps(backend)},"task_id":')
        return bhead

    def _workflow(self, wid: Any, created: float) -> OpenWorkflow | None:
        """The workflow's span (made on first sight; it starts with its earliest task: rows
        come when tasks finish, not in the order they were created)."""
        if wid is None:
            return None
        wf = self._workflows.get(wid)
        if wf is None:
            wf = self._workflows[wid] = OpenWorkflow(hex(self._bits(64) or 1), created)
        elif created < wf.start:
            wf.start = created
        return wf

    def _node_json(self, node: Any) -> str:
        nj = self._nodes.get(node)
        if nj is None:
            if len(self._nodes) > 100_000:
                self._nodes = {None: "null"}
            nj = self._nodes[node] = dumps(node)
        return nj

    # ------------------------------------------------------------------ templates
    def _template(self, key: int) -> str:
        """The template of a shared shape (``key``: shape * 128 + steps) for this batch."""
        base = self._templates.get(key)
        if base is None:
            base = self._templates[key] = self._build(*self._shape_of[key >> 7], key & 127)
        tpl = self._batch[key] = base.replace(_EMIT, self._emit_s)
        return tpl

    def _tpl(self, tr: OpenTask, steps: int) -> str:
        if tr.shape < 0:
            return self._build(tr.bhead, tr.attrs, tr.block, steps).replace(_EMIT, self._emit_s)
        key = (tr.shape << 7) | steps
        return self._batch.get(key) or self._template(key)

    def _build(self, bhead: str, attrs: str, block: bool, steps: int) -> str:
        """The lines of one task's new steps (bits ``steps``), to fill in with one %."""
        B, A = fmt(bhead), fmt(attrs)
        head = f'{{"event_id":"{self.prefix}%08x","event_type":"'
        tail = f',"trace_id":"{self.trace_hex}","span_id":"%s","name":"'
        parts = []
        for bit, et in ((_C, CREATED), (_R, RESOLVED), (_Q, QUEUED), (_S, SUBMITTED)):
            if steps & bit:  # args: id, time, uid, span
                parts.append(f'{head}{et}","event_time":%.6f,"emit_time":{_EMIT},{B}%s,'
                             f'"node_id":null,"attributes":{A}{tail}{et}","section":"event"}}\n')
        if steps & _ST:  # args: id, time, uid, node, span
            parts.append(f'{head}{STARTED}","event_time":%.6f,"emit_time":{_EMIT},{B}%s,'
                         f'"node_id":%s,"attributes":{A}{tail}{STARTED}","section":"event"}}\n')
        if steps & _D:
            # args: id, time, uid, node, duration, span; then the span line's: span,
            # parent span, start ns, end ns, start, end, ms, uid, node, duration, attempts
            fa = A if steps & _RAN else f'{A[:-1]},"incomplete_lifecycle":true}}'
            parts.append(f'{head}{COMPLETED}","event_time":%.6f,"emit_time":{_EMIT},{B}%s,'
                         f'"node_id":%s,"attributes":{fa},"duration_seconds":%.6f{tail}'
                         f'{COMPLETED}","section":"event"}}\n')
            parts.append(
                f'{{"name":"{"block" if block else "task"}","span_id":"%s",'
                f'"trace_id":"{self.trace_hex}","parent_span_id":"%s","start_ns":%d,'
                f'"end_ns":%d,"start_time_s":%.6f,"end_time_s":%.6f,"duration_ms":%.3f,'
                f'"status_code":"OK","status_description":null,"attributes":{{{B}%s,'
                f'{fmt(attrs[1:-1])},"status":"completed","node_id":%s,'
                f'"duration_seconds":%.6f,"attempts":%d}},"section":"span"}}\n')
        return "".join(parts)

    def _begin(self, emit: float) -> None:
        emit_s = "%.6f" % emit  # noqa: UP031
        if emit_s != self._emit_s:
            self._emit_s = emit_s
            self._batch = {}
            self._bbatch = {}

    # ------------------------------------------------------------------ the hot loop
    def feed(self, item: tuple, emit: float) -> None:
        """Take one item handed over at ``emit``: a batch of rows (``"B"``) or an event that
        needs more than a row (``"R"``: a failure, cancellation or retry)."""
        self._begin(emit)
        if item[0] == "R":
            self._rare(item)
            return
        row = self._row
        for r in item[2]:
            row(r)

    def _row(self, r: tuple) -> None:
        """Write the steps of one row that are new."""
        (uid, created, resolved, queued, submitted, started, finished, node, attempts, command,
         name, wid, backend, deps, kind, parent) = r
        tr = self._live.get(uid)
        if tr is None:
            if finished and not deps and parent is None and command is None \
                    and kind != "block":
                self._whole(r)  # the common case of a burst: first seen, and done
                return
            tr = self._open(uid, (name, wid, backend, deps), kind, parent, created)
        if command is not None and tr.command is None:  # an executable's command is known
            tr.command = command if isinstance(command, str) else " ".join(map(str, command))
            self._set_attrs(tr)
        metrics = self.metrics
        uidj = tr.uidj
        span = tr.span_hex
        steps = 0
        args: list = []
        c = self._count
        if not tr.seen:
            tr.seen = True
            steps = _C
            c += 1
            args += (c, tr.start, uidj, span)
        if resolved and resolved != tr.resolved:
            tr.resolved = resolved
            steps |= _R
            c += 1
            args += (c, resolved, uidj, span)
        if queued and queued != tr.queued:
            tr.queued = queued
            steps |= _Q
            c += 1
            args += (c, queued, uidj, span)
        if submitted and submitted != tr.submitted:
            tr.submitted = submitted
            if not tr.block:
                metrics.submitted += 1
            steps |= _S
            c += 1
            args += (c, submitted, uidj, span)
        if started and started != tr.run:
            tr.run = tr.started = started
            if not tr.block:
                metrics.started += 1
                metrics.running += 1
            tr.node = nj = self._node_json(node)
            steps |= _ST
            c += 1
            args += (c, started, uidj, nj, span)
        if finished:  # only completed tasks are written finished; other ends come as items
            ran = tr.started
            duration = finished - ran if ran else 0.0
            if duration < 0.0:
                duration = 0.0
            nj = tr.node
            if nj == "null":
                nj = self._node_json(node)
            steps |= (_D | _RAN) if ran else _D
            c += 1
            start_ns, end_ns = int(tr.start * 1e9), int(finished * 1e9)
            args += (c, finished, uidj, nj, duration, span, span, tr.parent_json, start_ns,
                     end_ns, tr.start, finished, (end_ns - start_ns) / 1e6, uidj, nj, duration,
                     attempts)
            self._ended(tr)
            if not tr.block:
                metrics.ended("completed", bool(ran), duration)
            wf = tr.wf
            if wf is not None:
                wf.counts["completed"] += 1
                if finished > wf.end:
                    wf.end = finished
        self._count = c
        if steps:
            shape = tr.shape
            if shape < 0:
                self._out.append(enc(self._tpl(tr, steps) % tuple(args)))
            else:
                key = (shape << 7) | steps
                self._out.append(enc((self._batch.get(key) or self._template(key)) % tuple(args)))

    def _whole(self, r: tuple) -> None:
        """All the lines of a task seen for the first time and done, without keeping it: the
        common case of a burst. Made as bytes (``bytes %`` is faster than ``str %``, and the
        lines need no encoding afterwards)."""
        (uid, created, resolved, queued, submitted, started, finished, node, attempts, _,
         name, wid, backend, _, kind, _) = r
        key = (name, kind, wid, backend)
        known = self._common.get(key)
        if known is None:
            t = OpenTask()
            t.name, t.kind, t.wid, t.deps, t.parent, t.command = name, kind, wid, (), None, None
            t.block = kind == "block"
            t.bhead = self._bhead(backend)
            self._set_attrs(t)
            wf = self._workflow(wid, created)
            if t.shape < 0:  # too many shapes: the general way
                self._row_slow(r)
                return
            if len(self._common) > 10_000:
                self._common.clear()
            pspan = (wf.span_hex if wf is not None else self.session_span_hex).encode()
            known = self._common[key] = (t.shape << 7, wf, t.block, pspan)
        base, wf, block, pspan = known
        uidj = dumps_str(uid).encode("utf-8", "backslashreplace")
        span = b"0x%x" % (self._bits(64) or 1)
        c = self._count + 1
        args: list = [c, created, uidj, span]
        steps = _C | _D
        if resolved:
            c += 1
            args += (c, resolved, uidj, span)
            steps |= _R
        if queued:
            c += 1
            args += (c, queued, uidj, span)
            steps |= _Q
        metrics = self.metrics
        if submitted:
            c += 1
            args += (c, submitted, uidj, span)
            steps |= _S
            if not block:
                metrics.submitted += 1
        nj = self._bnodes.get(node)
        if nj is None:
            nj = self._bnodes[node] = self._node_json(node).encode("utf-8", "backslashreplace")
            if len(self._bnodes) > 100_000:
                self._bnodes = {}
        if started:
            c += 1
            args += (c, started, uidj, nj, span)
            steps |= _ST | _RAN
            if not block:
                metrics.started += 1
            duration = finished - started
            if duration < 0.0:
                duration = 0.0
        else:
            duration = 0.0
        c += 1
        start_ns, end_ns = int(created * 1e9), int(finished * 1e9)
        if wf is not None:
            if created < wf.start:
                wf.start = created
            wf.counts["completed"] += 1
            if finished > wf.end:
                wf.end = finished
        args += (c, finished, uidj, nj, duration, span, span, pspan, start_ns, end_ns, created,
                 finished, (end_ns - start_ns) / 1e6, uidj, nj, duration, attempts)
        self._count = c
        if not block:
            metrics.duration_count += 1
            metrics.duration_sum += duration
            metrics.completed += 1
        key = base | steps
        self._out.append((self._bbatch.get(key) or self._btemplate(key)) % tuple(args))

    def _btemplate(self, key: int) -> bytes:
        """The bytes template of a shared shape for this batch (see :meth:`_template`)."""
        base = self._btemplates.get(key)
        if base is None:
            base = self._btemplates[key] = enc(
                self._build(*self._shape_of[key >> 7], key & 127))
        tpl = self._bbatch[key] = base.replace(_EMIT.encode(), self._emit_s.encode())
        return tpl

    def _row_slow(self, r: tuple) -> None:
        uid, created, name, wid, backend, deps, kind = r[0], r[1], r[10], r[11], r[12], r[13], r[14]
        self._open(uid, (name, wid, backend, deps), kind, None, created)
        self._row(r)

    def _ended(self, tr: OpenTask) -> None:
        del self._live[tr.uid]
        if tr.block:  # children written after their block still find its span
            if len(self._span_ids) > 100_000:
                self._span_ids.clear()
            self._span_ids[tr.uid] = tr.span_hex

    def lines(self, out: list) -> None:
        """Append the lines of everything fed since the last call (as one UTF-8 ``bytes``)."""
        if self._out:
            out.append(b"".join(self._out))
            self._out = []

