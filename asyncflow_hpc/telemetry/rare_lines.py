"""The translator's general way of writing a line, for what is rare: failures,
cancellations, retries, the session's own events, and the spans still open at the end.

A part of :class:`.translator.Translator` (it holds no state of its own). Standard library
and sibling modules only: the worker loads this file by path.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

try:
    from . import spans, text
except ImportError:  # loaded by path in the worker process
    import spans  # type: ignore[no-redef]
    import text  # type: ignore[no-redef]

SPAN_LINE = spans.SPAN_LINE
CANCELED, COMPLETED, FAILED, RETRIED = text.CANCELED, text.COMPLETED, text.FAILED, text.RETRIED
STATUS, clean, dumps, enc = text.STATUS, text.clean, text.dumps, text.enc

if TYPE_CHECKING:
    from .translator import OpenTask

__all__ = ["RareLines"]


class RareLines:
    """Rare lines (a part of the translator; see the module docstring)."""

    def _line(self, et: str, t: float, mid: str) -> str:
        """One event line from its middle part (the general way, for rare events)."""
        self._count += 1
        et = clean(et)
        return (f'{{"event_id":"{self.prefix}{self._count:08x}","event_type":"{et}",'
                f'"event_time":{t:.6f},"emit_time":{self._emit_s}{mid}{et}","section":"event"}}\n')

    def _rare(self, item: tuple) -> None:
        _, et, t, row, ef = item
        self._row(row)  # the steps before this event
        tr = self._live.get(row[0])
        if tr is None:  # ended already (should not happen)
            return
        node = row[7]
        if et == FAILED or et == COMPLETED or et == CANCELED:
            m, span = self._final(et, t, tr, self._node_json(node), row[8], ef)
            self._out.append(enc(self._line(et, t, m) + span))
        else:
            self._out.append(enc(self._line(et, t, self._other(et, tr, node, row[8], ef))))

    def _pre(self, tr: OpenTask) -> str:
        return f',{tr.bhead}{tr.uidj},"node_id":'

    def _final(self, et: str, t: float, tr: OpenTask, nj: str, attempts: int,
               ef: dict | None) -> tuple[str, str]:
        """The middle of a final event's line, and the task's span line (the general way:
        failures and cancellations)."""
        started = tr.started
        duration = t - started if started else 0.0
        if duration < 0.0:
            duration = 0.0
        dur = "%.6f" % duration  # noqa: UP031
        node = tr.node
        if node == "null":
            node = nj
        status = STATUS[et]
        if et == COMPLETED:
            code = "OK"
            desc = "null"
            ef = None
        elif et == FAILED:
            ef = ef or {"error_type": "unknown"}
            code = "ERROR"
            desc = dumps(ef["error_type"])
        else:
            code = "ERROR"
            desc = "null"
            ef = None
        pre = self._pre(tr)
        ids = f',"trace_id":"{self.trace_hex}","span_id":"{tr.span_hex}","name":"'
        head = f"{tr.bhead}{tr.uidj}"
        if ef is None:
            attrs = tr.attrs if started else f'{tr.attrs[:-1]},"incomplete_lifecycle":true}}'
            m = f'{pre}{node},"attributes":{attrs},"duration_seconds":{dur}{ids}'
            span_attrs = (f'{{{head},{tr.attrs[1:-1]},"status":"{status}","node_id":{node},'
                          f'"duration_seconds":{dur},"attempts":{attempts}}}')
        else:
            d = json.loads(tr.attrs)
            d.update(ef)
            if not started:
                d["incomplete_lifecycle"] = True
            m = f'{pre}{node},"attributes":{dumps(d)},"duration_seconds":{dur},' \
                f'"error_type":{desc}{ids}'
            span_attrs = (f'{{{head},{tr.attrs[1:-1]},"status":"{status}","node_id":{node},'
                          f'"duration_seconds":{dur},"attempts":{attempts},{dumps(ef)[1:-1]}}}')
        start = tr.start
        start_ns, end_ns = int(start * 1e9), int(t * 1e9)
        span = (f'{{"name":"{"block" if tr.block else "task"}","span_id":"{tr.span_hex}",'
                f'"trace_id":"{self.trace_hex}","parent_span_id":"{tr.parent_json}",'
                f'"start_ns":{start_ns},"end_ns":{end_ns},"start_time_s":{start:.6f},'
                f'"end_time_s":{t:.6f},"duration_ms":{(end_ns - start_ns) / 1e6:.3f},'
                f'"status_code":"{code}","status_description":{desc},"attributes":{span_attrs},'
                f'"section":"span"}}\n')
        self._ended(tr)
        if not tr.block:
            self.metrics.ended(status, bool(started), duration)
        wf = tr.wf
        if wf is not None:
            wf.counts[status] += 1
            if t > wf.end:
                wf.end = t
        return m, span

    def _other(self, et: str, tr: OpenTask, node: Any, attempts: int, ef: dict | None) -> str:
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
            extra = f',"error_type":{dumps(ef["error_type"])}'
        elif ef is not None:
            attrs.update(ef)
        return (f'{self._pre(tr)}{dumps(node)},"attributes":{dumps(attrs)}{extra},'
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
        return f'{dumps(d)[:-1]},{ids},"name":{dumps(d["event_type"])},"section":"event"}}\n'

    # ------------------------------------------------------------------ the end
    def finish(self, now: float, out: list[str]) -> None:
        """Close what is still open: unfinished tasks (if any), then the workflow spans."""
        for tr in list(self._live.values()):
            out.append(SPAN_LINE % (
                "block" if tr.block else "task", tr.span_hex, self.trace_hex, f'"{tr.parent_json}"',
                int(tr.start * 1e9), int(now * 1e9), tr.start, now, (now - tr.start) * 1e3,
                "UNSET", "null",
                f'{{{tr.bhead}{tr.uidj},{tr.attrs[1:-1]},"status":"unfinished"}}'))
        self._live.clear()
        for wid, wf in self._workflows.items():
            failed = wf.counts["failed"]
            attrs = {"workflow_id": wid, "session_id": self.session_id}
            attrs.update({f"tasks_{k}": v for k, v in wf.counts.items()})
            code, desc = ("ERROR", dumps(f"{failed} task(s) failed")) if failed else ("OK", "null")
            end = wf.end or now
            start_ns, end_ns = int(wf.start * 1e9), int(end * 1e9)
            out.append(SPAN_LINE % (
                "workflow", wf.span_hex, self.trace_hex, f'"{self.session_span_hex}"', start_ns,
                end_ns, wf.start, end, (end_ns - start_ns) / 1e6, code, desc, dumps(attrs)))
        self._workflows.clear()
