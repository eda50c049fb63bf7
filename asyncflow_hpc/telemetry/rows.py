"""The rows telemetry reads from the engine's task records, and the items that carry them.

The engine stamps the time of each step on a task's record and appends the record to its
*tape* when the task completes (``WorkflowEngine.attach_tape``): no call and no tuple per
event. :func:`pack_rows` turns records into a *batch* of plain values (strings, floats,
lists: what :mod:`marshal` can carry), one *row* per record, read in one pass in C so that
it is cheap on the event loop; unfinished records are packed the same way now and then, so
that their steps so far reach the log. Failures, cancellations and retries are packed when
they happen (:func:`rare_item`). The translator (:mod:`.translator`) turns items into lines,
in the telemetry worker process or on a thread.

A row is :data:`asyncflow_hpc.tasks.ROW_FIELDS`, defined next to the record it reads::

    uid, created, resolved, queued, submitted, started, finished,   # step times, 0.0: not yet
    node, attempts, command,                                        # command: executables only
    name, workflow_id, backend, dependencies, kind, parent_uid      # parent: the enclosing block

A batch is ``("B", emit, rows)``. An event that needs more than a row is
``("R", type, time, row, error fields)``: the row as it was just before the event.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from ..events import EventType
from ..tasks import ROW_FIELDS

__all__ = ["MAX_MESSAGE", "error_fields", "pack_rows", "rare_item", "sanitize"]

MAX_MESSAGE = 4000  # characters of an error message kept


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


# one pass in C per record (which matters once the records no longer fit in the CPU's
# cache); ``kind._value_`` is the plain string of the enum (``.value`` is a slower property)
_ROW = attrgetter(*ROW_FIELDS)


def pack_rows(records: list, emit: float) -> tuple:
    """A batch ``("B", emit, rows)``: one row per record (see the module docstring)."""
    return ("B", emit, list(map(_ROW, records)))


def rare_item(etype: str, rec: Any, error: BaseException | None, now: float) -> tuple:
    """A failure, cancellation or retry, packed when it happens (before the record changes):
    the record's row as it is, then the event."""
    return ("R", str(etype), now, _ROW(rec),
            error_fields(error) if etype != EventType.CANCELED else None)


def sanitize(item: tuple) -> tuple:
    """The item with every value :mod:`marshal` cannot carry replaced by its ``str``."""

    def s(v: Any) -> Any:
        return v if v is None or isinstance(v, (str, int, float)) else str(v)

    def cmd(v: Any) -> Any:
        if v is None or isinstance(v, str):
            return v
        try:
            return [s(a) for a in v]
        except TypeError:
            return str(v)

    def row(r: tuple) -> tuple:
        (uid, c, rs, q, sb, st, f, node, attempts, command, name, wid, backend, deps, kind,
         parent) = r
        return (s(uid), c, rs, q, sb, st, f, s(node),
                attempts if isinstance(attempts, int) else 0, cmd(command), s(name), s(wid),
                s(backend), [s(d) for d in deps], s(kind), s(parent))

    if item[0] == "R":
        tag, et, t, r, ef = item
        return (tag, s(et), t, row(r), ef and {s(k): s(v) for k, v in ef.items()})
    tag, emit, rows = item
    return (tag, emit, [row(r) for r in rows])
