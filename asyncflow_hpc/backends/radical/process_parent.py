"""Parent side of the RADICAL-Pilot client process (the child side: :mod:`.process_child`).

The engine's loop never blocks on the child: messages go out through a non-blocking socket
(whatever does not fit waits for ``add_writer``), reports come in through ``add_reader`` (no
polling) and are handed to the engine's reporter right there, on the loop. The reader is
registered on whichever loop is using the backend: one backend may serve several engines in
turn, each ``asyncio.run`` with a loop of its own (the tests share one pilot that way).

The child pushes what the synchronous parts of the backend's API read (pilot uid and state,
session, timings: its ``describe()``) whenever it changes; :meth:`ProcessClient.describe`
returns the latest copy, so nothing here ever waits for the child on the loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..._threads import in_thread
from ...child_env import with_package_on_path
from ...errors import BackendError, ConfigurationError
from ...framing import FrameReader, frame
from ...tasks import TaskKind, TaskSpec, TaskState
from ..base import Reporter
from . import messages as msgs
from .cleanup import end_session
from .options import Options
from .translate import pack_call, unpack_result

__all__ = ["ORIGINAL_PYTHONPATH", "ProcessClient"]

log = logging.getLogger("asyncflow_hpc.backends.radical")

#: longest stretch of pickling on the loop per flush (function tasks are dill-pickled here);
#: the rest of a big batch goes in the next loop iteration
_FLUSH_SLICE = 0.010
#: how long shutdown waits for the child to exit after RP closed, before killing it
EXIT_TIMEOUT = 30.0
#: how long shutdown waits for RP's own close in the child
CLOSE_TIMEOUT = 300.0
#: the user's PYTHONPATH ("=value", or "-": unset) while the child's carries this package
ORIGINAL_PYTHONPATH = "_ASYNCFLOW_HPC_USER_PYTHONPATH"


def _child_environment() -> dict[str, str]:
    """This environment, plus what the child needs to import this very package.

    The package may be importable here only through a path the program added itself; the
    child finds it through PYTHONPATH and then restores the user's PYTHONPATH, so RP's
    processes and the tasks see the environment unchanged.
    """
    user = os.environ.get("PYTHONPATH")
    env = with_package_on_path()
    env[ORIGINAL_PYTHONPATH] = "-" if user is None else "=" + user
    return env


class ProcessClient:
    """Runs an :class:`~.inprocess.InProcessClient` in a child process; relays to the loop."""

    def __init__(self, opts: Options, name: str) -> None:
        self.opts = opts
        self.name = name
        self.reporter: Reporter | None = None
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # where our reader is registered
        self.frames = FrameReader()
        self.out = bytearray()
        self.writing = False
        self.ids = itertools.count(1)
        self.calls: dict[int, asyncio.Future] = {}
        self.reporters: dict[str, Reporter] = {}  # spec uid -> reporter, unfinished tasks
        self.pending: list[TaskSpec] = []
        self.flush_handle: asyncio.Handle | None = None
        self.info: dict[str, Any] = {}  # the child's latest describe()
        self.forked: list[tuple[int, float]] = []  # (pid, start time) RP forked in the child
        self.dead: BaseException | None = None  # the child is gone (or going)
        self.closing = False
        self.finished = False  # shutdown() ran to its end

    # ================================================================ life cycle
    async def start(self) -> None:
        parent, child = socket.socketpair()
        for s in (parent, child):  # a burst of reports should not wait for the reader
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                except OSError:
                    pass
        cfg = {"options": self.opts, "name": self.name, "sys_path": list(sys.path),
               "log_level": logging.getLogger("asyncflow_hpc").getEffectiveLevel()}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "asyncflow_hpc.backends.radical.process_child",
                 str(child.fileno())], pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
                env=_child_environment())
        except OSError as exc:
            parent.close()
            raise BackendError(f"cannot start the RADICAL-Pilot client process: {exc}") from exc
        finally:
            child.close()
        parent.setblocking(False)
        self.sock = parent
        self._attach(asyncio.get_running_loop())
        self._send(cfg)
        try:
            self.forked = await self.request("start")
        except BaseException:
            await self.shutdown()
            raise

    def bind(self, reporter: Reporter) -> None:
        # a flush scheduled on a previous engine's loop would never run: send its batch now
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
            self._flush_all()
        self.reporter = reporter
        self._attach(reporter.loop)

    async def shutdown(self) -> None:
        self.closing = True
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        self.pending.clear()
        proc = self.proc
        if proc is None or self.finished:
            return
        self.finished = True
        clean = False  # RP closed in the child (else its processes are ended from here)
        if self.dead is None and self.sock is not None:
            self._attach(asyncio.get_running_loop())
            try:
                await asyncio.wait_for(self.request("shutdown"), CLOSE_TIMEOUT)
                clean = True
            except (asyncio.TimeoutError, BackendError) as exc:
                if proc.poll() is None:
                    log.warning("RADICAL-Pilot client process did not shut down cleanly: %s",
                                exc)
                else:  # it ended before we asked (a signal, a crash): said so already
                    log.info("RADICAL-Pilot client process had exited (code %s)", proc.poll())
        self._close_socket()  # EOF tells the child to finish, if it has not yet
        deadline = time.monotonic() + EXIT_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            log.warning("RADICAL-Pilot client process %d did not exit; killing it", proc.pid)
            proc.kill()  # by pid, through our own Popen
            await in_thread(proc.wait)
        if not clean and self.session_uid:
            await in_thread(end_session, self.session_uid, self.opts.work_dir, self.forked)
        self._fail_unfinished(None)

    # ================================================================ requests
    async def request(self, op: str, *args: Any) -> Any:
        """Send ``op`` and await the child's reply (its value, or its exception raised here)."""
        if self.dead is not None:
            raise self.dead
        if self.sock is None:
            raise BackendError(f"backend {self.name!r} is not running (not started, or "
                               "shut down)")
        loop = asyncio.get_running_loop()
        self._attach(loop)
        rid = next(self.ids)
        fut = loop.create_future()
        self.calls[rid] = fut
        self._send((op, rid, *args))
        try:
            return await fut
        finally:
            self.calls.pop(rid, None)

    async def wait_active(self) -> str:
        return await self.request("wait")

    async def call(self, fn: Callable[..., Any], args: tuple) -> Any:
        """``fn(client, *args)`` in the child, on the client there (everything pickles)."""
        import cloudpickle

        blob = await self.request("call", cloudpickle.dumps((fn, args)))
        return pickle.loads(blob)

    # ================================================================ what the child told
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def pilot_uid(self) -> str | None:
        return self.info.get("pilot_uid")

    @property
    def session_uid(self) -> str | None:
        return self.info.get("session")

    @property
    def timings(self) -> dict[str, float]:
        return dict(self.info.get("timings") or {})

    def describe(self) -> dict[str, Any]:
        """The child's latest description (empty before it started)."""
        if not self.info:
            return {}
        return {**self.info, "unfinished_tasks": len(self.reporters), "client_pid": self.pid}

    # ================================================================ submit / cancel
    def submit(self, specs: Sequence[TaskSpec]) -> None:
        reporter = self.reporter
        assert reporter is not None, "bind() comes first"
        if self.dead is not None or self.closing or self.sock is None:
            err = self.dead or BackendError(f"backend {self.name!r} is not running")
            for spec in specs:
                reporter.failed(spec.uid, err)
            return
        for spec in specs:
            self.reporters[spec.uid] = reporter
        self.pending.extend(specs)
        if self.flush_handle is None:
            self.flush_handle = reporter.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """One ``submit`` message per loop iteration: the child makes it one submit_tasks."""
        self.flush_handle = None
        if self.closing or self.dead is not None:
            self.pending.clear()
            return
        batch: list[tuple] = []
        stop = time.perf_counter() + _FLUSH_SLICE
        taken = 0
        for spec in self.pending:
            taken += 1
            packed = None
            if spec.kind is TaskKind.FUNCTION:
                try:
                    packed = pack_call(spec)
                except Exception as exc:  # unpicklable function or argument: that task only
                    self._report(spec.uid, TaskState.FAILED, None, exc, None)
                    continue
            batch.append(msgs.spec_to_wire(spec, packed))
            if packed is not None and time.perf_counter() > stop:
                break  # dill is slow on big arguments: the rest goes next iteration
        del self.pending[:taken]
        if self.pending:
            self.flush_handle = self.reporter.loop.call_soon(self._flush)
        if batch:
            try:
                data = frame(("submit", batch))
            except Exception:  # something in a task_description does not pickle
                batch = self._picklable(batch)
                data = frame(("submit", batch)) if batch else b""
            if data:
                self._send_bytes(data)

    def _picklable(self, batch: list[tuple]) -> list[tuple]:
        """The specs of ``batch`` that pickle; the others fail with a clear error."""
        out = []
        for t in batch:
            try:
                pickle.dumps(t)
            except Exception as exc:
                self._report(t[0], TaskState.FAILED, None, ConfigurationError(
                    f"task {t[1]!r} cannot be sent to the RADICAL-Pilot client process: "
                    f"its task_description or command does not pickle ({exc})"), None)
            else:
                out.append(t)
        return out

    def _flush_all(self) -> None:
        while self.pending and not self.closing and self.dead is None:
            self._flush()
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None

    def cancel(self, uid: str) -> None:
        for i, spec in enumerate(self.pending):
            if spec.uid == uid:
                del self.pending[i]
                self.reporters.pop(uid, None)
                return
        if self.reporters.pop(uid, None) is not None and self.dead is None \
                and not self.closing:
            self._send(("cancel", uid))

    # ================================================================ socket
    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve the socket from ``loop`` (the one now using the backend)."""
        if loop is self.loop or self.sock is None:
            return
        fd = self.sock.fileno()
        old = self.loop
        if old is not None and not old.is_closed():
            old.remove_reader(fd)
            old.remove_writer(fd)
        self.loop = loop
        self.writing = False
        loop.add_reader(fd, self._read_some)
        if self.out:
            self._want_write()

    def _send(self, msg: Any) -> None:
        self._send_bytes(frame(msg))

    def _send_bytes(self, data: bytes) -> None:
        if self.sock is None:
            return
        self.out += data
        if not self.writing:
            self._write_some()
            if self.out:
                self._want_write()

    def _want_write(self) -> None:
        if self.loop is not None and not self.loop.is_closed() and not self.writing:
            self.writing = True
            self.loop.add_writer(self.sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        self._write_some()
        if not self.out and self.writing:
            self.writing = False
            if self.loop is not None and self.sock is not None:
                self.loop.remove_writer(self.sock.fileno())

    def _write_some(self) -> None:
        try:
            while self.out:
                sent = self.sock.send(self.out)
                del self.out[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            self.out.clear()
            self._child_gone(f"the socket to it failed: {exc}")

    def _read_some(self) -> None:
        msgs_in: list[tuple] = []
        eof = False
        while self.sock is not None:
            try:
                data = self.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                eof = True
                break
            for batch in self.frames.feed(data):
                msgs_in.extend(batch)  # the child sends lists of messages
        for msg in msgs_in:
            self._handle(msg)
        if eof:
            self._child_gone("its socket was closed")

    def _handle(self, msg: tuple) -> None:
        op = msg[0]
        if op == "r":
            _, uid, code, value, err, node = msg
            if code == msgs.PACKED:
                ok, value = unpack_result(value)
                state, error = (TaskState.DONE, None) if ok else (TaskState.FAILED, value)
                value = value if ok else None
            else:
                state = msgs.CODE_STATES[code]
                error = msgs.load_error(err) if err is not None else None
            self._report(uid, state, value, error, node)
        elif op == "info":
            self.info = msg[1]
        elif op == "reply":
            _, rid, ok, value = msg
            fut = self.calls.get(rid)
            if fut is None or fut.done() or fut.get_loop().is_closed():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(msgs.load_error(value))
        elif op == "log":
            _, name, level, text = msg
            logging.getLogger(name).log(level, "%s", text)

    def _report(self, uid: str, state: TaskState, value: Any, error: BaseException | None,
                node: str | None) -> None:
        rep = self.reporters.get(uid) if state is TaskState.RUNNING else \
            self.reporters.pop(uid, None)
        if rep is None:
            return  # cancelled meanwhile: the engine settled it already
        if rep.loop is not self.loop:  # an earlier engine's loop (likely closed by now)
            rep.threadsafe(uid, state, value, error, node)
        elif state is TaskState.RUNNING:
            rep.running(uid, node)
        elif state is TaskState.DONE:
            rep.done(uid, value, node)
        elif state is TaskState.FAILED:
            rep.failed(uid, error, node)
        else:
            rep.cancelled(uid)

    # ================================================================ the child ending
    def _child_gone(self, why: str) -> None:
        if self.dead is not None:
            return
        code = self.proc.poll() if self.proc is not None else None
        self.dead = BackendError(
            f"the RADICAL-Pilot client process (pid {self.pid or '?'}) ended ({why}; exit "
            f"code {code})")
        if not self.closing:
            log.error("%s", self.dead)
        self._close_socket()
        for fut in list(self.calls.values()):
            if not fut.done() and not fut.get_loop().is_closed():
                fut.set_exception(self.dead)
        self._fail_unfinished(None if self.closing else self.dead)

    def _close_socket(self) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self.loop is not None and not self.loop.is_closed():
            self.loop.remove_reader(sock.fileno())
            self.loop.remove_writer(sock.fileno())
        self.writing = False
        self.loop = None
        sock.close()

    def _fail_unfinished(self, err: BaseException | None) -> None:
        """Tasks the child can no longer report: failed (child died) or cancelled (shutdown)."""
        reporters, self.reporters = self.reporters, {}
        for uid, rep in reporters.items():
            if err is None:
                rep.threadsafe(uid, TaskState.CANCELLED)
            else:
                rep.threadsafe(uid, TaskState.FAILED, error=err)
