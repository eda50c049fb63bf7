"""What the dispatcher keeps per task and per agent, and how a warm task's end becomes the
engine's report (shared by :mod:`.dispatcher` and :mod:`.agents`)."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import socket
from typing import Any

from ....errors import ExecutableNotFoundError, TaskExecutionError, TaskTimeoutError, WorkerLostError
from ....tasks import TaskSpec
from ...base import Reporter
from .protocol import ERR, EXIT, NOTFOUND, TIMEOUT

__all__ = ["Entry", "Link", "RemoteError", "default_address", "deliver",
           "warm_error"]


class RemoteError(Exception):
    """A warm task's exception that could not travel back as itself."""


_SERIAL = itertools.count(1)


class Entry:
    __slots__ = ("spec", "tid", "reporter", "agent", "dropped")

    def __init__(self, spec: TaskSpec, reporter: Reporter) -> None:
        self.spec = spec
        # unique for the dispatcher's life: the agents outlive an engine, and the next
        # engine's uids start again at task.000001 (a late word about an earlier engine's
        # task must not reach this one's)
        self.tid = f"{spec.uid}.{spec.attempt}.{next(_SERIAL)}"
        self.reporter = reporter  # of the engine that submitted it
        self.agent: Link | None = None
        self.dropped = False  # cancelled: whatever the agent says next is ignored


class Link:
    """One connected pool agent."""

    __slots__ = ("aid", "rp_uid", "pilot", "writer", "host", "slots", "booked", "held",
                 "fids", "stopping")

    def __init__(self, aid: str, rp_uid: str, pilot: str, writer: asyncio.StreamWriter,
                 host: str, slots: int, booked: int) -> None:
        self.aid, self.rp_uid, self.pilot = aid, rp_uid, pilot
        self.writer, self.host = writer, host
        self.slots = slots  # tasks at once (the agent's usable cores)
        self.booked = booked  # cores RP gave it
        self.held: dict[str, Entry] = {}  # tid -> entry: sent, not ended
        self.fids: set[int] = set()
        self.stopping = False


def deliver(reporter: Reporter, items: list[tuple]) -> None:
    """On the engine's loop: one batch of reports (the only way results get there)."""
    for item in items:
        kind, uid = item[0], item[1]
        if kind == "r":
            reporter.running(uid, item[2], at=item[3])
        elif kind == "d":
            reporter.done(uid, item[2], item[3], stamps=item[4])
        elif kind == "f":
            reporter.failed(uid, item[2], item[3], stamps=item[4])
        else:
            reporter.cancelled(uid)



def warm_error(spec: TaskSpec, status: str, payload: Any, link: Link) -> BaseException:
    """The exception for a warm task that ended with ``status`` on ``link``'s agent."""
    if status == ERR:
        blob, text, tb = payload
        exc: Any = None
        if blob is not None:
            try:
                exc = pickle.loads(blob)
            except Exception:  # noqa: BLE001
                exc = None
        if not isinstance(exc, BaseException):
            exc = RemoteError(text)
        try:
            exc.add_note(f"remote traceback (warm worker on {link.host}):\n{tb.rstrip()}")
        except Exception:  # noqa: BLE001
            pass
        return exc
    if status == EXIT:
        code, out, err, folder = payload
        return TaskExecutionError(spec.command_line, code,
                                  err.decode("utf-8", errors="replace"), task=spec.name,
                                  details=f"ran on {link.host}; sandbox: {folder}")
    if status == NOTFOUND:
        cmd = spec.command
        argv0 = cmd if isinstance(cmd, str) else (cmd or [""])[0]
        return ExecutableNotFoundError(str(argv0), spec.command_line, payload)
    if status == TIMEOUT:
        return TaskTimeoutError(f"task {spec.name!r} exceeded its timeout of "
                                f"{spec.timeout} s (its process was killed)")
    return WorkerLostError(f"task {spec.name!r}: {payload} (warm worker pool on "
                           f"{link.host}, agent {link.aid})")


def default_address(client: Any) -> str:
    """Where agents can reach us: loopback for a pilot on this machine, else this host."""
    resource = str((client.describe() or {}).get("resource") or "")
    if resource.startswith("local.") or os.environ.get("RADICAL_DEFAULT_IFACE") == "lo":
        return "127.0.0.1"
    return socket.gethostbyname(socket.getfqdn())



