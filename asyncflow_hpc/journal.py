"""The engine's result store (:class:`ResultStore`) and the crash-safe one, :class:`Journal`.

The engine is given a store as ``journal=`` and uses nothing else of it: before a task runs
it asks ``key_for`` and ``lookup`` (a recorded result settles the task without running it);
after the task succeeds it calls ``record``; at shutdown it awaits ``close``.

With ``WorkflowEngine.create(journal=PATH)`` (or ``asyncflow-hpc run --journal/--resume``)
that store is a :class:`Journal` at PATH: every task that finishes successfully is appended
under a key built from its kind, name, resolved arguments (or command line, shell flag, cwd
and environment) and workflow id. When the same campaign runs again — after a crash,
``kill -9`` or an expired allocation — tasks whose key is recorded get their recorded result
at once, without running; the rest run.

The key also holds a digest of the task function's code (its bytecode, constants and names;
not line numbers or comments), so a body fixed after a crash runs again on resume while its
untouched siblings are reused; ``match_code=False`` (``run --ignore-code-changes``) matches by
name and arguments only. The journal counts what it reused and what ran again because only
the code differed, and says so at close.

A *new* journal (``new=True``, what ``asyncflow-hpc run`` without ``--resume`` opens) reuses
nothing; an earlier journal at the path is moved aside (``PATH.<time>``, announced) only when
the first result is recorded, so a run that fails before any task finished leaves it as it was.

Why the format is what it is:

* JSON lines, one ``os.write`` per record on an ``O_APPEND`` descriptor: a record is in the
  kernel the moment the task settles, so it survives ``kill -9`` of the campaign; ``fsync``
  runs on a timer (every ``sync_interval`` s, and at close) so power loss costs at most that
  much work while 100,000 tasks do not pay 100,000 fsyncs. A torn last line is ignored.
* Identical calls (same name, arguments and workflow) are numbered in call order (``#0``,
  ``#1``, ...): a task called 100 times to draw 100 samples gets 100 records, not one.
* Results are stored as JSON when JSON gives them back exactly (``None``, ``bool``, ``int``,
  finite ``float``, ``str`` and lists and string-keyed dicts of them). Anything else (tuples,
  arrays, objects) is pickled in an envelope signed with HMAC-SHA256 under a key private to
  the user (``$XDG_CONFIG_HOME/asyncflow-hpc/journal.key``, mode 0600): resume unpickles only
  what this user's asyncflow-hpc wrote, so a journal planted or edited by someone else cannot
  run code. A record that does not verify is ignored with a warning (its task runs again);
  so are records of older versions, which were not signed. A result that cannot be pickled
  is not recorded (that task re-runs on resume); the first such task is named in a warning.
* One run at a time: a journal is locked (``flock`` on ``PATH.lock``) while its engine runs;
  a second run on it fails at once with :class:`~asyncflow_hpc.errors.JournalError`
  naming the path and the process holding it.
* A torn last line (the run was killed while writing it) is ignored, and a newline is
  written after it before anything else, so the next record never glues onto it.
* The file and its folder are opened without following links and must be the user's
  (:mod:`asyncflow_hpc.safe_files`). A write that fails (a full disk) raises ``JournalError``.
"""

from __future__ import annotations

import asyncio
import base64
import errno as _errno
import functools
import hashlib
import hmac
import json
import logging
import math
import os
import pickle
import socket
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import JournalError, UnsafePathError
from .safe_files import private_dir, safe_open
from .tasks import TaskKind, TaskRecord

__all__ = ["Journal", "ResultStore", "journal_key_path", "lock_journal", "task_key"]

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
    """The journal key of a task whose arguments are resolved (without occurrence number
    and code digest)."""
    if rec.kind is TaskKind.EXECUTABLE:
        td = rec.task_description or {}
        what: Any = ("exe", command, bool(td.get("shell")), td.get("cwd") or td.get("sandbox"),
                     td.get("env") or td.get("environment"), td.get("pre_exec"))
    else:
        what = ("fn", rec.args, rec.kwargs)
    blob = pickle.dumps((rec.kind.value, rec.name, rec.workflow_id, _canonical(what)), protocol=4)
    return hashlib.sha256(blob).hexdigest()[:32]


def code_digest(func: Any) -> str:
    """A digest of what a task function does: its code objects' bytecode, constants, names
    and plain default values — stable across runs, unchanged by moved lines or comments."""
    try:
        return _digests[func]
    except (KeyError, TypeError):  # not seen yet, or not weakly referable (no cache then)
        pass
    digest = _code_digest(func)
    try:
        _digests[func] = digest
    except TypeError:
        pass
    return digest


#: digests of the task functions seen (weakly: a function's closure is not kept alive here)
_digests: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _code_digest(func: Any) -> str:
    h = hashlib.sha256()
    seen: set[int] = set()

    def code(c: Any) -> None:
        h.update(c.co_code)
        h.update(repr((c.co_names, c.co_varnames, c.co_freevars, c.co_argcount,
                       c.co_kwonlyargcount, c.co_flags)).encode())
        for const in c.co_consts:
            if hasattr(const, "co_code"):
                code(const)
            else:
                h.update(repr(const).encode(errors="surrogateescape"))

    def callable_(f: Any, depth: int = 0) -> None:
        if depth > 5 or id(f) in seen:
            return
        seen.add(id(f))
        f = getattr(f, "__wrapped__", f)
        c = getattr(f, "__code__", None)
        if c is not None:
            code(c)
            for default in (getattr(f, "__defaults__", None) or ()):
                if isinstance(default, _ATOMS):
                    h.update(repr(default).encode(errors="surrogateescape"))
        elif isinstance(f, functools.partial):
            callable_(f.func, depth + 1)
        elif callable(f) and not isinstance(f, type):
            callable_(getattr(type(f).__call__, "__func__", type(f).__call__), depth + 1)
        h.update(str(getattr(f, "__qualname__", type(f).__qualname__)).encode())

    callable_(func)
    return h.hexdigest()[:12]


_MAC_CONTEXT = b"asyncflow-hpc journal v2\0"
_KEY_BYTES = 32
_JSON_SCALARS = (type(None), bool, int, str)


def _exact_json(value: Any, depth: int = 0) -> bool:
    """True when ``json.loads(json.dumps(value))`` gives back an equal value of the same types."""
    t = type(value)
    if t in _JSON_SCALARS:
        return True
    if t is float:
        return math.isfinite(value)
    if depth > 100:
        return False
    if t is list:
        return all(_exact_json(x, depth + 1) for x in value)
    if t is dict:
        return all(type(k) is str and _exact_json(v, depth + 1) for k, v in value.items())
    return False


def journal_key_path() -> str:
    """Where the key that signs pickled journal records is kept."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(os.path.abspath(base), "asyncflow-hpc", "journal.key")


def _read_key(path: str) -> bytes:
    fd = safe_open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077:
            raise UnsafePathError(f"the journal key {path} may be read by other users (mode "
                                  f"{st.st_mode & 0o777:04o}); delete it and a new one is made",
                                  path)
        key = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != _KEY_BYTES:
        raise UnsafePathError(f"the journal key {path} is damaged ({len(key)} bytes); delete it "
                              "and a new one is made", path)
    return key


def _user_key(create: bool) -> bytes | None:
    """The user's journal key; made (0600, ``O_EXCL``, linked into place) when asked to."""
    path = journal_key_path()
    try:
        return _read_key(path)
    except FileNotFoundError:
        if not create:
            return None
    folder = private_dir(os.path.dirname(path))
    tmp = os.path.join(folder, f".journal.key.{os.getpid()}.{os.urandom(4).hex()}")
    fd = safe_open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, os.urandom(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic: a concurrent run that made one first wins
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return _read_key(path)


def _mac(key: bytes, k: str, blob: str) -> str:
    return hmac.new(key, _MAC_CONTEXT + k.encode() + b"\0" + blob.encode(),
                    hashlib.sha256).hexdigest()


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").split()
    except OSError:
        return ""
    if len(text) >= 2 and text[0].isdigit():
        return f" (pid {text[0]} on {text[1]})"
    return ""


def lock_journal(path: str | os.PathLike) -> int:
    """Lock the journal at ``path`` for this run (``flock`` on ``PATH.lock``); return the
    lock's descriptor (closing it releases the lock). Creates missing folders 0700.

    Raises :class:`JournalError` when another run holds it; on a file system without locks
    the run goes on unlocked, with a warning.
    """
    path = os.fspath(path)
    lock_path = path + ".lock"
    try:
        fd = safe_open(lock_path, os.O_RDWR | os.O_CREAT, 0o600, make_dirs=True)
    except UnsafePathError:
        raise
    except OSError as exc:
        raise JournalError(f"cannot use journal {path}: {exc.strerror or exc}", path,
                           exc.errno) from None
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (_errno.EWOULDBLOCK, _errno.EAGAIN, _errno.EACCES):
            who = _holder(fd)
            os.close(fd)
            raise JournalError(
                f"journal {path} is in use by another run{who}; wait for it to finish, or "
                "give this run its own journal (--journal PATH)", path, exc.errno) from None
        log.warning("journal %s: cannot lock it (%s); nothing keeps a second run from using "
                    "it at the same time", path, exc.strerror or exc)
        return fd
    except ImportError:  # no fcntl (Windows)
        return fd
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    except OSError:
        pass
    return fd


@runtime_checkable
class ResultStore(Protocol):
    """What the engine asks of a result store — the plug-in given as ``journal=``.

    Before a task runs, the engine asks :meth:`key_for` for its key and :meth:`lookup` for a
    recorded result (a hit settles the task at once, without running it); after the task
    succeeds it calls :meth:`record`. All three run on the engine's loop; :meth:`record`
    raising stops the run (see ``WorkflowEngine``). :meth:`close` is awaited at shutdown.
    :class:`Journal` is the store the engine opens when ``journal=`` is a path.
    """

    def key_for(self, rec: TaskRecord, command: Any = None) -> str | None:
        """The key of this call (None: the task cannot be stored and always runs)."""

    def lookup(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` when a result is recorded under ``key``, else ``(False, None)``."""

    def record(self, key: str, rec: TaskRecord, value: Any) -> None:
        """Keep the result of a task that succeeded."""

    async def close(self) -> None:
        """Make what was recorded durable and let go of the store."""


class Journal:
    """An append-only record of finished tasks (a :class:`ResultStore`); see the module
    docstring."""

    def __init__(self, path: str | os.PathLike, *, sync_interval: float = 0.2,
                 new: bool = False, match_code: bool = True) -> None:
        self.path = Path(path)
        self.sync_interval = sync_interval
        self.match_code = match_code
        self._recorded: dict[str, tuple] = {}  # key -> ("j", value) | ("s", json) | ("p", ..)
        self._by_call: dict[str, str] = {}  # key without its code digest -> key
        self._seen: dict[str, int] = {}  # base key -> occurrences so far in this run
        self.loaded = 0  # results recorded by earlier runs
        self.moved_to: Path | None = None  # where an earlier journal went (new=True)
        self._aside = False  # new=True over an earlier journal: move it at the first record
        self.code_changed = 0  # recorded results not reused: the task's code changed
        self.hits = 0
        self.written = 0
        self.unverified = 0  # records ignored: signature missing or wrong
        self._warned_unpicklable = False
        self._warned_unkeyable = False
        self._warned_unsigned = False
        self._key: bytes | None = None
        self._key_failed = False
        self._dirty = False
        self._timer: asyncio.TimerHandle | None = None
        self._fd = -1
        self._lock_fd = lock_journal(self.path)
        try:
            self._open(new)
        except BaseException:
            self.release()
            raise

    def _open(self, new: bool = False) -> None:
        path = str(self.path)
        if new:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                pass
            else:
                if st.st_size:
                    self._aside = True  # moved at the first record: see _move_aside
                    return
        try:
            self._fd = safe_open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600,
                                 make_dirs=True)
        except UnsafePathError:
            raise
        except OSError as exc:
            raise JournalError(f"cannot use journal {path}: {exc.strerror or exc}", path,
                               exc.errno) from None
        self._load()
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            self._write(b"\n")  # a torn last line: the next record starts on a line of its own

    def _load(self) -> None:
        legacy = 0
        with open(os.dup(self._fd), "rb") as fh:
            fh.seek(0)
            for lineno, line in enumerate(fh, 1):
                try:
                    rec = json.loads(line)
                    k = rec["k"]
                    if type(k) is not str:
                        raise TypeError(k)
                    if "j" in rec:
                        self._recorded[k] = ("j", rec["j"])
                    elif type(rec.get("p")) is str and type(rec.get("h")) is str:
                        self._recorded[k] = ("p", rec["p"], rec["h"])
                    elif "v" in rec:
                        legacy += 1
                        continue
                    else:
                        raise KeyError("j")
                    self._by_call[k.partition("@")[0]] = k
                except (ValueError, KeyError, TypeError):
                    # a torn line from a killed run; anything else is reported
                    log.debug("journal %s: ignoring unreadable line %d", self.path, lineno)
        self.loaded = len(self._recorded)
        if legacy:
            log.warning("journal %s: %d record(s) written by an older asyncflow-hpc are not "
                        "signed and are ignored; those tasks run again", self.path, legacy)

    def __len__(self) -> int:
        return len(self._recorded)

    def _signing_key(self, create: bool) -> bytes | None:
        if self._key is None and not self._key_failed:
            try:
                self._key = _user_key(create)
            except OSError as exc:  # UnsafePathError included
                self._key_failed = True
                log.warning("journal: no key to sign or check pickled results (%s); results "
                            "that are not plain JSON are not reused", exc)
        return self._key

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
        return f"{base}#{n}@{code_digest(rec.function)}"

    def lookup(self, key: str) -> tuple[bool, Any]:
        entry = self._recorded.get(key)
        if entry is None:
            # the same call recorded with other code (or by a version without digests)
            other = self._by_call.get(key.partition("@")[0])
            if other is None:
                return False, None
            if self.match_code:
                self.code_changed += 1
                return False, None
            key, entry = other, self._recorded[other]
        kind = entry[0]
        if kind == "j":
            value = entry[1]
        elif kind == "s":
            value = json.loads(entry[1])
        else:
            _, blob, mac = entry
            secret = self._signing_key(create=False)
            if secret is None or not hmac.compare_digest(_mac(secret, key, blob), mac):
                del self._recorded[key]
                self.unverified += 1
                if not self._warned_unsigned:
                    self._warned_unsigned = True
                    log.warning("journal %s: a recorded result does not verify (not written by "
                                "this user's asyncflow-hpc, or altered); it is ignored and its "
                                "task runs again", self.path)
                return False, None
            try:
                value = pickle.loads(base64.b64decode(blob))
            except Exception:  # recorded by a version whose classes changed: run it again
                return False, None
        self.hits += 1
        return True, value

    def record(self, key: str, rec: TaskRecord, value: Any) -> None:
        """Append the result of a finished task; raises :class:`JournalError` when the
        journal cannot be written (a full disk, say)."""
        entry: tuple | None = None
        body = ""
        if _exact_json(value):
            try:
                text = json.dumps(value, separators=(",", ":"), allow_nan=False)
                body = f'"j":{text}'
                entry = ("s", text)
            except (ValueError, RecursionError):  # an int too long for str(), say
                entry = None
        if entry is None:
            try:
                blob = base64.b64encode(pickle.dumps(value, protocol=4)).decode("ascii")
            except Exception as exc:
                if not self._warned_unpicklable:
                    self._warned_unpicklable = True
                    log.warning("journal: the result of task %r (%s) cannot be pickled (%s); it "
                                "is not recorded and such tasks re-run on resume", rec.name,
                                rec.uid, exc)
                return
            secret = self._signing_key(create=True)
            if secret is None:
                return
            mac = _mac(secret, key, blob)
            body = f'"p":"{blob}","h":"{mac}"'
            entry = ("p", blob, mac)
        meta = json.dumps({"name": rec.name, "wf": rec.workflow_id, "t": round(time.time(), 3)},
                          separators=(",", ":"))
        line = f'{{"k":{json.dumps(key)},{body},{meta[1:]}\n'
        self._write(line.encode())
        self._recorded[key] = entry
        self.written += 1
        if not self._dirty:
            self._dirty = True
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # used outside an engine: durable at once
                self._sync()
            else:
                self._timer = loop.call_later(self.sync_interval, self._sync)

    def _move_aside(self) -> None:
        """A new journal's first record: move the earlier one aside (same folder) and say so."""
        self._aside = False
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = self.path.with_name(f"{self.path.name}.{stamp}")
        n = 0
        while backup.exists() or backup.is_symlink():
            n += 1
            backup = self.path.with_name(f"{self.path.name}.{stamp}.{n}")
        try:
            os.rename(self.path, backup)  # a rename, never a copy through links
        except FileNotFoundError:
            pass  # removed meanwhile: nothing to keep
        except OSError as exc:
            raise JournalError(f"cannot move the earlier journal {self.path} aside: "
                               f"{exc.strerror or exc}", str(self.path), exc.errno) from None
        else:
            self.moved_to = backup
            log.warning("journal: this run starts a new journal; the earlier one was moved to "
                        "%s (resume from it with --resume --journal %s)", backup, backup)
        self._open()

    def _write(self, data: bytes) -> None:
        if self._aside:
            self._move_aside()
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise JournalError(f"cannot write to journal {self.path}: {exc.strerror or exc}",
                               str(self.path), exc.errno) from None

    def _sync(self) -> None:
        self._timer = None
        if self._dirty and self._fd >= 0:
            self._dirty = False
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.warning("journal %s: fsync failed: %s", self.path, exc.strerror or exc)

    def release(self) -> None:
        """Close the journal and its lock at once, without the final fsync."""
        for name in ("_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                setattr(self, name, -1)
                try:
                    os.close(fd)
                except OSError:
                    pass

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.warning("journal %s: fsync failed: %s", self.path, exc.strerror or exc)
        self.release()
        if self.loaded:  # a resumed run: what it reused and what ran again, and why
            changed = (f", {self.code_changed:,} ran again because their code changed"
                       if self.code_changed else "")
            log.warning("journal %s: resumed: %s result(s) reused%s, %s recorded in this run",
                        self.path, f"{self.hits:,}", changed, f"{self.written:,}")
        elif self.written:
            log.info("journal %s: %d result(s) recorded", self.path, self.written)
        if self.unverified:
            log.warning("journal %s: %d recorded result(s) were not trusted and their tasks "
                        "ran again", self.path, self.unverified)

