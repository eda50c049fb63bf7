"""Crash-safe journal of finished tasks, and resume.

With ``WorkflowEngine.create(journal=PATH)`` (or ``asyncflow-hpc run --journal/--resume``)
every task that finishes successfully is appended to PATH under a key built from its kind,
name, resolved arguments (or command line, shell flag, cwd and environment) and workflow id.
When the same campaign runs again — after a crash, ``kill -9`` or an expired allocation —
tasks whose key is recorded get their recorded result at once, without running; the rest run.

Why the format is what it is:

* JSON lines, one ``os.write`` per record on an ``O_APPEND`` descriptor: a record is in the
  kernel the moment the task settles, so it survives ``kill -9`` of the campaign; ``fsync``
  runs on a timer (every ``sync_interval`` s, and at close) so power loss costs at most that
  much work while 100,000 tasks do not pay 100,000 fsyncs. A torn last line is ignored.
* Identical calls (same name, arguments and workflow) are numbered in call order (``#0``,
  ``#1``, ...): a task called 100 times to draw 100 samples gets 100 records, not one.
* Results are pickled. One that cannot be pickled is not recorded (that task re-runs on
  resume); the first such task is reported with a warning naming it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pickle
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .tasks import TaskKind, TaskRecord

__all__ = ["Journal", "attach", "task_key"]

log = logging.getLogger("asyncflow_hpc.journal")

_ATOMS = (int, float, str, bytes, bool, type(None), complex)


class _Unkeyable(Exception):
    pass


def _canonical(obj: Any, depth: int = 0) -> Any:
    """A value whose pickle is the same in every run for equal inputs (set and dict order)."""
    if depth > 50:
        raise _Unkeyable("arguments nested too deeply")
    if isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, tuple(_canonical(x, depth + 1) for x in obj))
    if isinstance(obj, Mapping):
        items = sorted(((repr(k), _canonical(v, depth + 1)) for k, v in obj.items()),
                       key=lambda kv: kv[0])
        return ("dict", tuple(items))
    if isinstance(obj, (set, frozenset)):
        return ("set", tuple(sorted(repr(_canonical(x, depth + 1)) for x in obj)))
    if isinstance(obj, os.PathLike):
        return ("path", type(obj).__name__, os.fspath(obj))
    try:
        return ("pickle", pickle.dumps(obj, protocol=4))
    except Exception as exc:
        raise _Unkeyable(f"an argument of type {type(obj).__name__} cannot be pickled") from exc


def task_key(rec: TaskRecord, command: Any = None) -> str:
    """The journal key of a task whose arguments are resolved (without occurrence number)."""
    if rec.kind is TaskKind.EXECUTABLE:
        td = rec.task_description or {}
        what: Any = ("exe", command, bool(td.get("shell")), td.get("cwd") or td.get("sandbox"),
                     td.get("env") or td.get("environment"), td.get("pre_exec"))
    else:
        what = ("fn", rec.args, rec.kwargs)
    blob = pickle.dumps((rec.kind.value, rec.name, rec.workflow_id, _canonical(what)), protocol=4)
    return hashlib.sha256(blob).hexdigest()[:32]


class Journal:
    """An append-only record of finished tasks; see the module docstring."""

    def __init__(self, path: str | os.PathLike, *, sync_interval: float = 0.2) -> None:
        self.path = Path(path)
        self.sync_interval = sync_interval
        self._recorded: dict[str, str] = {}  # key -> base64 pickle
        self._seen: dict[str, int] = {}  # base key -> occurrences so far in this run
        self.hits = 0
        self.written = 0
        self._warned_unpicklable = False
        self._warned_unkeyable = False
        self._dirty = False
        self._timer: Any = None
        self._loop: Any = None
        self._load()
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, mode=0o700)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.chmod(self.path, 0o600)

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                try:
                    rec = json.loads(line)
                    self._recorded[rec["k"]] = rec["v"]
                except (ValueError, KeyError, TypeError):
                    # a torn last line from a killed run; anything else is reported
                    log.debug("journal %s: ignoring unreadable line %d", self.path, lineno)

    def __len__(self) -> int:
        return len(self._recorded)

    # ------------------------------------------------------------------ engine side
    def key_for(self, rec: TaskRecord, command: Any = None) -> str | None:
        """The occurrence-numbered key of a task, or None when it cannot have one."""
        try:
            base = task_key(rec, command)
        except _Unkeyable as exc:
            if not self._warned_unkeyable:
                self._warned_unkeyable = True
                log.warning("journal: task %r cannot be journaled (%s); such tasks re-run on "
                            "resume", rec.name, exc)
            return None
        n = self._seen.get(base, 0)
        self._seen[base] = n + 1
        return f"{base}#{n}"

    def lookup(self, key: str) -> tuple[bool, Any]:
        blob = self._recorded.get(key)
        if blob is None:
            return False, None
        try:
            value = pickle.loads(base64.b64decode(blob))
        except Exception:  # recorded by a version whose classes changed: run it again
            return False, None
        self.hits += 1
        return True, value

    def record(self, key: str, rec: TaskRecord, value: Any) -> None:
        try:
            blob = base64.b64encode(pickle.dumps(value, protocol=4)).decode("ascii")
        except Exception as exc:
            if not self._warned_unpicklable:
                self._warned_unpicklable = True
                log.warning("journal: the result of task %r (%s) cannot be pickled (%s); it is "
                            "not recorded and such tasks re-run on resume", rec.name, rec.uid, exc)
            return
        line = json.dumps({"k": key, "v": blob, "name": rec.name, "wf": rec.workflow_id,
                           "t": round(time.time(), 3)}, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())
        self._recorded[key] = blob
        self.written += 1
        if not self._dirty:
            self._dirty = True
            if self._loop is not None and self._timer is None:
                self._timer = self._loop.call_later(self.sync_interval, self._sync)

    def _sync(self) -> None:
        self._timer = None
        if self._dirty:
            self._dirty = False
            os.fsync(self._fd)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        if self.hits or self.written:
            log.info("journal %s: %d result(s) reused, %d recorded", self.path, self.hits,
                     self.written)


def attach(engine: Any, path: str | os.PathLike) -> Journal:
    """Open (or continue) the journal at ``path`` and make ``engine`` use it."""
    import asyncio

    journal = Journal(path)
    journal._loop = asyncio.get_running_loop()
    engine._journal = journal
    return journal
