"""Compact event batches and their translation into RHAPSODY JSONL lines.

The engine's observer only appends ``type, time, record, error`` to a flat list. :func:`pack`
turns such a list into a *batch* of plain values (strings, floats, lists, tuples, dicts:
what :mod:`marshal` can carry), column by column and mostly in C (slices, ``map``,
``attrgetter``, ``compress``), so it is cheap on the event loop. A :class:`BatchTranslator`
turns batches into lines; it runs in the telemetry worker process (:mod:`.worker`) on another
core, so the loop only pays for the observer and :func:`pack`.

This module imports nothing from the package (the worker loads it by file, without importing
``asyncflow_hpc``), only the standard library and its sibling modules ``spans`` and ``metrics``.

A batch is a tuple ``("B", emit, types, times, uids, names, workflow_ids, backends,
dependencies, kinds, parents, commands, nodes, attempts, errors)``:

* ``types``, ``times``, ``uids``: one entry per event;
* ``times``: an ``array("d")`` as bytes; ``uids``: joined by newlines;
* ``names``, ``workflow_ids``, ``backends``, ``dependencies``, ``kinds`` (``function``,
  ``executable``, ``block``): one per ``TaskCreated``;
  ``parents``: the enclosing block's uid per ``TaskCreated``, or None when no task has one;
* ``commands``: executables' command lines noted by the observer, by uid;
* ``nodes``, ``attempts``: per event other than created/resolved/queued/submitted;
* ``errors``: ``(index, error fields)`` for the events that carry an exception.

Lines are the ones :mod:`.translate` writes (same keys, order, values): per task the constant
parts of its lines (session, backend, task id, attributes, span ids) are encoded once with
:mod:`json` (so user strings are escaped correctly) and every event fills in its type, times,
node and event id.
"""

from __future__ import annotations

import json
import os
import random
from array import array
from itertools import compress, repeat
from operator import attrgetter, floordiv, mod
from typing import Any

try:
    from .metrics import Metrics
    from .spans import SPAN_LINE
except ImportError:  # loaded as a top-level module by the worker process
    from metrics import Metrics  # type: ignore[no-redef]
    from spans import SPAN_LINE  # type: ignore[no-redef]

__all__ = ["BatchTranslator", "pack", "error_fields", "MAX_MESSAGE"]

CREATED, RESOLVED, QUEUED, SUBMITTED, STARTED = (
    "TaskCreated", "TaskResolved", "TaskQueued", "TaskSubmitted", "TaskStarted")
COMPLETED, FAILED, CANCELED, RETRIED = "TaskCompleted", "TaskFailed", "TaskCanceled", "TaskRetried"
MAX_MESSAGE = 4000

_dumps = json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False).encode
_dumps_str = json.encoder.encode_basestring  # a str as JSON (C), as _dumps writes it
_rand = random.Random(os.urandom(16))


def error_fields(error: BaseException | None) -> dict:
    """``error_type`` (the real exception class), ``error_message``, ``root_cause_type``."""
    if error is None:
        return {"error_type": "unknown"}
    try:
        msg = str(error)
    except Exception:
        msg = repr(error)
    out = {"error_type": type(error).__name__,
           "error_message": msg if len(msg) <= MAX_MESSAGE else msg[:MAX_MESSAGE] + "…"}
    root = getattr(error, "root_cause", None)
    if isinstance(root, BaseException):
        out["root_cause_type"] = type(root).__name__
    return out


# ---------------------------------------------------------------------- packing (event loop)
_uid = attrgetter("uid")
_name = attrgetter("name")
_wid = attrgetter("workflow_id")
_backend = attrgetter("backend")
_deps = attrgetter("dependencies")
_parent = attrgetter("parent")
_node = attrgetter("node")
_attempts = attrgetter("attempts")
_kind = attrgetter("kind")
# TaskKind is a str enum: its members hash and compare like their values, and enum's
# ``.value`` is a Python-level property (slow); this maps a member to its plain string
_KINDS = {"function": "function", "executable": "executable", "block": "block"}
_is_created = frozenset({CREATED}).__contains__  # faster in map() than str.__eq__
_LIGHT = {CREATED: False, RESOLVED: False, QUEUED: False, SUBMITTED: False}


def pack(buf: list, emit: float, commands: dict) -> tuple:
    """A batch of the flat event list ``buf`` (type, time, record, error, ...).

    Column by column, in C where it can be: no tuple per event or task (they would also
    feed the garbage collector)."""
    types = buf[0::4]
    recs = buf[2::4]
    created = list(compress(recs, map(_is_created, types)))
    kinds = list(map(_KINDS.get, map(_kind, created)))
    if None in kinds:  # a kind this module does not know yet
        kinds = [k if k is not None else str(getattr(r.kind, "value", r.kind))
                 for k, r in zip(kinds, created, strict=True)]
    parents: Any = list(map(_parent, created))
    if parents.count(None) == len(parents):
        parents = None
    else:
        parents = [p.uid if p is not None else None for p in parents]
    errs = buf[3::4]
    errors: Any = ()
    if errs.count(None) != len(errs):
        errors = [(i, error_fields(e)) for i, e in enumerate(errs) if e is not None]
    cmds = None
    if commands:
        cmds = {k: v if isinstance(v, str) else " ".join(map(str, v))
                for k, v in commands.items()}
        commands.clear()
    heavy = list(compress(recs, map(_LIGHT.get, types, repeat(True))))
    return ("B", emit, types, array("d", buf[1::4]).tobytes(), "\n".join(map(_uid, recs)),
            list(map(_name, created)), list(map(_wid, created)), list(map(_backend, created)),
            list(map(_deps, created)), kinds, parents, cmds, list(map(_node, heavy)),
            list(map(_attempts, heavy)), errors)


def sanitize(batch: tuple) -> tuple:
    """The batch with every value :mod:`marshal` cannot carry replaced by its ``str``."""

    def s(v: Any) -> Any:
        return v if v is None or isinstance(v, (str, int, float)) else str(v)

    (tag, emit, types, times, uids, names, wids, backends, deps, kinds, parents, cmds, nodes,
     attempts, errors) = batch
    return (tag, emit, [s(t) for t in types], times, uids, [s(n) for n in names],
            [s(w) for w in wids], [s(b) for b in backends], [[s(d) for d in ds] for ds in deps],
            [s(k) for k in kinds], parents and [s(p) for p in parents],
            cmds and {s(k): s(v) for k, v in cmds.items()}, [s(n) for n in nodes],
            [a if isinstance(a, int) else 0 for a in attempts],
            [(i, {k: s(v) for k, v in e.items()}) for i, e in errors])


# ---------------------------------------------------------------------- translation (worker)
class _Task:
    """What one unfinished task needs between its events."""

    __slots__ = ("uid", "name", "kind", "wid", "deps", "parent", "command", "backend", "head",
                 "attrs", "pre", "post", "mid", "span_hex", "parent_json", "start", "start_s",
                 "started", "node", "block", "wf")


class _Workflow:
    __slots__ = ("span_hex", "start", "end", "counts")

    def __init__(self, span_hex: str, start: float) -> None:
        self.span_hex = span_hex
        self.start = start
        self.end = 0.0
        self.counts = {"completed": 0, "failed": 0, "canceled": 0}


_STATUS = {COMPLETED: "completed", FAILED: "failed", CANCELED: "canceled"}
_US = 1_000_000
_to_us = (1e6).__mul__


class _Pieces(dict):
    """Constant pieces of event lines by event type, made on first use."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.fmt = fmt

    def __missing__(self, etype: str) -> str:
        if not isinstance(etype, str) or '"' in etype or "\\" in etype:
            etype = str(etype).replace("\\", "").replace('"', "")
        piece = self[etype] = self.fmt % etype
        return piece


_TYPE_HEAD = _Pieces('","event_type":"%s","event_time":')
_TYPE_TAIL = _Pieces('%s","section":"event"}\n')


class BatchTranslator:
    """Stateful: feed batches in the order they were packed; lines are appended to ``out``.

    The loop over a batch's events only picks, per event, the task's constant middle part
    (session, backend, task id, node, attributes, span ids) and, after a final event, the
    task's span line; the batch's lines are then joined at once from their pieces (event
    ids and times formatted by one ``%`` each, in C)."""

    def __init__(self, session_id: str, trace_hex: str, session_span_hex: str,
                 metrics: Metrics | None = None, prefix: str | None = None) -> None:
        self.session_id = session_id
        self.trace_hex = trace_hex
        self.session_span_hex = session_span_hex
        self.metrics = metrics if metrics is not None else Metrics(session_id)
        self.prefix = prefix or os.urandom(12).hex()
        self._P = '{"event_id":"' + self.prefix
        self._sid = _dumps(session_id)
        self._count = 0
        self._live: dict[str, _Task] = {}
        self._workflows: dict[Any, _Workflow] = {}
        self._commands: dict[str, str] = {}
        self._heads: dict[Any, str] = {}
        self._attr_heads: dict[tuple, str] = {}
        self._nodes: dict[Any, str] = {None: "null"}
        self._bits = _rand.getrandbits

    # ------------------------------------------------------------------ per task
    def _attrs(self, t: _Task) -> str:
        if t.command is not None:
            d = {"executable": t.command, "task_type": t.kind, "task_name": t.name,
                 "workflow_id": t.wid, "depends_on": list(t.deps)}
            if t.parent is not None:
                d["block_id"] = t.parent
            return _dumps(d)
        key = (t.name, t.kind, t.wid)
        head = self._attr_heads.get(key)
        if head is None:
            if len(self._attr_heads) > 10_000:
                self._attr_heads.clear()
            full = _dumps({"executable": t.name, "task_type": t.kind, "task_name": t.name,
                           "workflow_id": t.wid, "depends_on": []})
            head = self._attr_heads[key] = full[:-3]  # up to '"depends_on":'
        deps = t.deps
        tail = "]" if not deps else _dumps(deps)[1:]
        if t.parent is not None:
            return f'{head}[{tail},"block_id":{_dumps(t.parent)}}}'
        return f"{head}[{tail}}}"

    def _set_attrs(self, t: _Task) -> None:
        t.attrs = self._attrs(t)
        t.post = f',"attributes":{t.attrs},"trace_id":"{self.trace_hex}","span_id":"'
        t.mid = f'{t.pre}null{t.post}{t.span_hex}","name":"'

    def _open(self, uid: str, static: tuple | None, kind: str, parent: str | None,
              time: float, time_s: str) -> _Task:
        t = _Task()
        if static is None:  # first seen after its creation (should not happen)
            static = (uid, None, None, ())
        t.uid = uid
        t.name, wid, backend, t.deps = static
        t.wid = wid
        t.backend = backend
        t.kind = kind
        t.parent = parent
        commands = self._commands
        t.command = commands.pop(uid, None) if commands else None
        t.block = kind == "block"
        wf = None
        if wid is not None:
            wf = self._workflows.get(wid)
            if wf is None:
                wf = self._workflows[wid] = _Workflow(hex(self._bits(64) or 1), time)
        t.wf = wf
        pspan = None
        if parent is not None:
            pt = self._live.get(parent)
            if pt is not None:
                pspan = pt.span_hex
        if pspan is None:
            pspan = wf.span_hex if wf is not None else self.session_span_hex
        t.parent_json = pspan
        t.span_hex = hex(self._bits(64) or 1)
        bhead = self._heads.get(backend)
        if bhead is None:
            bhead = self._heads[backend] = (
                f',"session_id":{self._sid},"backend":{_dumps(backend)},"task_id":')
        t.head = head = f"{bhead}{_dumps_str(uid)}"
        t.pre = f'{head},"node_id":'
        self._set_attrs(t)
        t.start = time
        t.start_s = time_s
        t.started = 0.0
        t.node = "null"
        self._live[uid] = t
        return t

    # ------------------------------------------------------------------ the hot loop
    def feed(self, batch: tuple, out: list[str]) -> None:
        (_, emit, types, times, uids, names, wids, backends, deps, kinds, parents, cmds, nodes_,
         attempts_, errors) = batch
        n = len(types)
        if not n:
            return
        if cmds:
            self._commands.update(cmds)
        times = array("d", times).tolist()
        uids = uids.split("\n")
        # event ids and times for all of the batch's lines, each made by one % (in C)
        c0 = self._count
        self._count = c0 + n
        ids = (("%08x\n" * n) % tuple(range(c0 + 1, c0 + n + 1))).split("\n")
        ids.pop()
        us = list(map(round, map(_to_us, times)))
        parts: list = [None] * (2 * n)
        parts[0::2] = map(floordiv, us, repeat(_US))
        parts[1::2] = map(mod, us, repeat(_US))
        ts = (("%d.%06d\n" * n) % tuple(parts)).split("\n")
        ts.pop()
        live = self._live
        get = live.get
        nodes = self._nodes
        metrics = self.metrics
        commands = self._commands
        errs = dict(errors) if errors else None
        mids: list[str] = []
        mid = mids.append
        after = [""] * n
        si = ni = 0
        for i, et in enumerate(types):
            if et == CREATED:
                tr = self._open(uids[i], (names[si], wids[si], backends[si], deps[si]),
                                kinds[si], parents[si] if parents else None, times[i], ts[i])
                si += 1
                mid(tr.mid)
                continue
            tr = get(uids[i])
            if tr is None:
                tr = self._open(uids[i], None, "function", None, times[i], ts[i])
            if et == RESOLVED or et == SUBMITTED:
                if et == SUBMITTED and not tr.block:
                    metrics.submitted += 1
                mid(tr.mid)
                continue
            if et == QUEUED:
                if commands and tr.uid in commands:
                    tr.command = commands.pop(tr.uid)
                    self._set_attrs(tr)
                mid(tr.mid)
                continue
            node = nodes_[ni]
            attempts = attempts_[ni]
            ni += 1
            nj = nodes.get(node)
            if nj is None:
                nj = nodes[node] = _dumps(node)
            if et == COMPLETED or et == FAILED or et == CANCELED:
                m, after[i] = self._final(et, times[i], ts[i], tr, nj, attempts,
                                          errs.get(i) if errs else None)
                mid(m)
            elif et == STARTED:
                tr.started = times[i]
                if not tr.block:
                    metrics.started += 1
                    metrics.running += 1
                tr.node = nj
                mid(f'{tr.pre}{nj}{tr.post}{tr.span_hex}","name":"')
            else:  # TaskRetried, and whatever types a newer engine adds
                mid(self._other(et, tr, node, attempts, errs.get(i) if errs else None))
        # the lines, joined from their pieces
        pieces: list = [None] * (8 * n)
        pieces[0::8] = repeat(self._P, n)
        pieces[1::8] = ids
        pieces[2::8] = map(_TYPE_HEAD.__getitem__, types)
        pieces[3::8] = ts
        pieces[4::8] = repeat(',"emit_time":' + ("%.6f" % emit), n)  # noqa: UP031
        pieces[5::8] = mids
        pieces[6::8] = map(_TYPE_TAIL.__getitem__, types)
        pieces[7::8] = after
        out.append("".join(pieces))

    def _final(self, et: str, t: float, t_s: str, tr: _Task, nj: str, attempts: int,
               ef: dict | None) -> tuple[str, str]:
        """The middle of a final event's line, and the task's span line."""
        started = tr.started
        duration = t - started if started else 0.0
        if duration < 0.0:
            duration = 0.0
        dur = "%.6f" % duration  # noqa: UP031
        node = tr.node
        if node == "null":
            node = nj
        status = _STATUS[et]
        if et == COMPLETED:
            code = "OK"
            desc = "null"
            ef = None
        elif et == FAILED:
            ef = ef or {"error_type": "unknown"}
            code = "ERROR"
            desc = _dumps(ef["error_type"])
        else:
            code = "ERROR"
            desc = "null"
            ef = None
        if ef is None:
            if started:
                m = f'{tr.pre}{node},"attributes":{tr.attrs},"duration_seconds":{dur}' \
                    f',"trace_id":"{self.trace_hex}","span_id":"{tr.span_hex}","name":"'
            else:
                m = f'{tr.pre}{node},"attributes":{tr.attrs[:-1]},"incomplete_lifecycle":true}}' \
                    f',"duration_seconds":{dur},"trace_id":"{self.trace_hex}",' \
                    f'"span_id":"{tr.span_hex}","name":"'
            span_attrs = (f'{{{tr.head[1:]},{tr.attrs[1:-1]},"status":"{status}","node_id":{node},'
                          f'"duration_seconds":{dur},"attempts":{attempts}}}')
        else:
            d = json.loads(tr.attrs)
            d.update(ef)
            if not started:
                d["incomplete_lifecycle"] = True
            m = f'{tr.pre}{node},"attributes":{_dumps(d)},"duration_seconds":{dur},' \
                f'"error_type":{desc},"trace_id":"{self.trace_hex}","span_id":"{tr.span_hex}",' \
                '"name":"'
            span_attrs = (f'{{{tr.head[1:]},{tr.attrs[1:-1]},"status":"{status}","node_id":{node},'
                          f'"duration_seconds":{dur},"attempts":{attempts},{_dumps(ef)[1:-1]}}}')
        start = tr.start
        start_ns, end_ns = int(start * 1e9), int(t * 1e9)
        span = (f'{{"name":"{"block" if tr.block else "task"}","span_id":"{tr.span_hex}",'
                f'"trace_id":"{self.trace_hex}","parent_span_id":"{tr.parent_json}",'
                f'"start_ns":{start_ns},"end_ns":{end_ns},"start_time_s":{tr.start_s},'
                f'"end_time_s":{t_s},"duration_ms":{(end_ns - start_ns) / 1e6:.3f},'
                f'"status_code":"{code}","status_description":{desc},"attributes":{span_attrs},'
                f'"section":"span"}}\n')
        del self._live[tr.uid]
        if not tr.block:
            metrics = self.metrics
            if started:
                metrics.running -= 1
            metrics.duration_count += 1
            metrics.duration_sum += duration
            if et == COMPLETED:
                metrics.completed += 1
            elif et == FAILED:
                metrics.failed += 1
            else:
                metrics.canceled += 1
        wf = tr.wf
        if wf is not None:
            wf.counts[status] += 1
            if t > wf.end:
                wf.end = t
        return m, span

    def _other(self, et: str, tr: _Task, node: Any, attempts: int, ef: dict | None) -> str:
        """The middle of a TaskRetried line (or of a type this module does not know)."""
        attrs = json.loads(tr.attrs)
        extra = ""
        if et == RETRIED:
            if tr.started and not tr.block:
                self.metrics.running -= 1
            tr.started = 0.0
            ef = ef or {"error_type": "unknown"}
            attrs.update(ef)
            attrs["attempt"] = attempts
            extra = f',"error_type":{_dumps(ef["error_type"])}'
        elif ef is not None:
            attrs.update(ef)
        return (f'{tr.pre}{_dumps(node)},"attributes":{_dumps(attrs)}{extra},'
                f'"trace_id":"{self.trace_hex}","span_id":"{tr.span_hex}","name":"')

    def event_line(self, etype: str, t: float, emit: float, *, backend: Any,
                   task_id: str | None = None, node_id: Any = None,
                   attributes: dict | None = None, ids: str | None = None,
                   **extra: Any) -> str:
        """One event line built the general way (rare events)."""
        self._count += 1
        d = {"event_id": f"{self.prefix}{self._count:08x}", "event_type": etype,
             "event_time": round(t, 6), "emit_time": round(emit, 6),
             "session_id": self.session_id, "backend": backend, "task_id": task_id,
             "node_id": node_id, "attributes": attributes or {}, **extra}
        if ids is None:
            ids = f'"trace_id":"{self.trace_hex}","span_id":"{self.session_span_hex}"'
        return f'{_dumps(d)[:-1]},{ids},"name":"{etype}","section":"event"}}\n'

    # ------------------------------------------------------------------ the end
    def finish(self, now: float, out: list[str]) -> None:
        """Close what is still open: unfinished tasks (if any), then the workflow spans."""
        for tr in list(self._live.values()):
            out.append(SPAN_LINE % (
                "block" if tr.block else "task", tr.span_hex, self.trace_hex, f'"{tr.parent_json}"',
                int(tr.start * 1e9), int(now * 1e9), tr.start, now, (now - tr.start) * 1e3,
                "UNSET", "null", f'{{{tr.head[1:]},{tr.attrs[1:-1]},"status":"unfinished"}}'))
        self._live.clear()
        for wid, wf in self._workflows.items():
            failed = wf.counts["failed"]
            attrs = {"workflow_id": wid, "session_id": self.session_id}
            attrs.update({f"tasks_{k}": v for k, v in wf.counts.items()})
            code, desc = ("ERROR", _dumps(f"{failed} task(s) failed")) if failed else ("OK", "null")
            end = wf.end or now
            start_ns, end_ns = int(wf.start * 1e9), int(end * 1e9)
            out.append(SPAN_LINE % (
                "workflow", wf.span_hex, self.trace_hex, f'"{self.session_span_hex}"', start_ns,
                end_ns, wf.start, end, (end_ns - start_ns) / 1e6, code, desc, _dumps(attrs)))
        self._workflows.clear()
