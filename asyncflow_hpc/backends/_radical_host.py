"""The RADICAL-Pilot client process: ``python -m asyncflow_hpc.backends._radical_host FD``.

Why a process: RP's client threads (its ZMQ listeners decode every state update with msgpack
and stringify it) hold the GIL for tens of milliseconds during a burst of updates. In the
engine's process that stalls its event loop; here it stalls nobody. This process runs the
ordinary in-process :class:`RadicalPilotBackend` (``client="thread"``) on an asyncio loop of
its own, bound to a reporter that forwards every report over the socket FD to the parent
(``_radical_client.ProcessClient``).

It never outlives its parent: SIGINT is ignored (the parent drives shutdown, and a Ctrl-C
reaches the whole process group), and when the socket reaches EOF (the parent exited or was
killed, even by SIGKILL) it shuts RP down (pilot cancelled, session closed) and exits.
SIGTERM and SIGHUP do the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import socket
import sys
import traceback
from typing import Any

from .._threads import in_thread
from ..errors import BackendError
from ..tasks import TaskState
from . import _radical_wire as wire
from ._radical_client import ORIGINAL_PYTHONPATH
from .base import Reporter
from .radical import RadicalPilotBackend

log = logging.getLogger("asyncflow_hpc.backends.radical")


class _Packed:
    """A function task's result as the raptor worker returned it; the parent unpacks it."""

    __slots__ = ("payload",)

    def __init__(self, payload: Any) -> None:
        self.payload = payload


class HostedBackend(RadicalPilotBackend):
    """The in-process backend, minus the pickling of user objects (the parent does that)."""

    def _pack_call(self, spec: Any) -> str:
        return spec.args[0]

    def _unpack_result(self, value: Any) -> tuple[bool, Any]:
        return True, _Packed(value)


class Host:
    """Serves the parent's messages; sends reports and replies in batches, one per loop turn."""

    def __init__(self, writer: asyncio.StreamWriter, backend: HostedBackend) -> None:
        self.loop = asyncio.get_running_loop()
        self.writer = writer
        self.backend = backend
        self.outbox: list[tuple] = []
        self.flush_handle: asyncio.Handle | None = None
        self.closing: asyncio.Task | None = None
        self.abandoned: str | None = None  # why we shut down without the parent asking
        self.closed = self.loop.create_future()  # set once RP is shut down
        self.tasks: set[asyncio.Task] = set()
        backend.bind(Reporter(self.report, self.loop))

    # -- outgoing ---------------------------------------------------------------------
    def post(self, msg: tuple) -> None:
        self.outbox.append(msg)
        if self.flush_handle is None:
            self.flush_handle = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_handle = None
        batch, self.outbox = self.outbox, []
        if not batch or self.writer.is_closing():
            return
        try:
            data = wire.frame(batch)
        except Exception:  # a value that does not pickle: send the rest, fail that one
            data = b"".join(wire.frame([m]) if _pickles(m) else wire.frame([_unpicklable(m)])
                            for m in batch)
        self.writer.write(data)  # buffered by asyncio; the parent drains it from its loop

    def report(self, uid: str, state: Any, value: Any, error: BaseException | None,
               node: str | None) -> None:
        """The backend's reporter sink (on this loop): one report, forwarded."""
        if state is TaskState.CANCELLED and self.abandoned:
            # the user did not cancel it: a signal ended this process under the engine
            state, error = TaskState.FAILED, BackendError(
                f"the RADICAL-Pilot client process shut down ({self.abandoned}) before the "
                "task finished")
        code = wire.STATE_CODES[state]
        if isinstance(value, _Packed):
            code, value = wire.PACKED, value.payload
        self.post(("r", uid, code, value, wire.dump_error(error) if error else None, node))

    def reply(self, rid: int, coro: Any) -> None:
        async def run() -> None:
            try:
                value = await coro
            except BaseException as exc:  # noqa: BLE001 - goes to the parent's awaiter
                self.post(("reply", rid, False, wire.dump_error(exc)))
            else:
                self.post(("reply", rid, True, value))

        task = self.loop.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- incoming ---------------------------------------------------------------------
    def handle(self, msg: tuple) -> None:
        op = msg[0]
        backend = self.backend
        if op == "submit":
            backend.submit([wire.spec_from_wire(t) for t in msg[1]])
        elif op == "cancel":
            backend.cancel(msg[1])
        elif op == "start":
            self.reply(msg[1], self._start())
        elif op == "wait":
            self.reply(msg[1], backend.wait_active())
        elif op == "describe":
            self.reply(msg[1], _now(backend.describe))
        elif op == "call":
            self.reply(msg[1], self._call(msg[2]))
        elif op == "shutdown":
            self.reply(msg[1], self.shutdown())
        else:
            log.error("RADICAL-Pilot client process: unknown message %r", op)

    async def _start(self) -> dict[str, Any]:
        await self.backend.start()
        return {"describe": self.backend.describe(), "forked": _identities(self.backend._own_pids)}

    async def _call(self, blob: bytes) -> bytes:
        import cloudpickle

        fn, args = pickle.loads(blob)
        value = await in_thread(fn, self.backend, *args)
        return cloudpickle.dumps(value)

    def abandon(self, why: str) -> None:
        """Shut down on our own (a signal): unfinished tasks fail instead of 'cancelled'."""
        if self.closing is None:
            self.abandoned = why
            log.warning("RADICAL-Pilot client process: %s; shutting down", why)
        self.shutdown()

    def shutdown(self) -> asyncio.Task:
        """RP down (once, however many ask: the parent, EOF, SIGTERM); describe() after."""
        if self.closing is None:
            async def close() -> dict[str, Any]:
                try:
                    await self.backend.shutdown()
                    await asyncio.sleep(0)  # the reports of the leftover tasks go out first
                finally:
                    if not self.closed.done():
                        self.closed.set_result(None)
                return self.backend.describe()

            self.closing = self.loop.create_task(close())
        return self.closing


def _identities(pids: set[int]) -> list[tuple[int, float]]:
    """(pid, start time) of processes RP forked from this one: if this process is killed,
    the parent ends them (they carry this command line and nothing else that names them)."""
    import psutil

    out = []
    for pid in pids:
        try:
            out.append((pid, psutil.Process(pid).create_time()))
        except psutil.Error:
            pass
    return out


def _pickles(msg: tuple) -> bool:
    try:
        pickle.dumps(msg)
        return True
    except Exception:
        return False


def _unpicklable(msg: tuple) -> tuple:
    if msg[0] == "r":
        err = BackendError(f"the result of task {msg[1]} could not be pickled to send it from "
                           f"the RADICAL-Pilot client process: {type(msg[3]).__name__}")
        return ("r", msg[1], "F", None, pickle.dumps(err), msg[5])
    if msg[0] == "reply":
        return ("reply", msg[1], False, wire.dump_error(
            TypeError(f"the reply could not be pickled: {type(msg[3]).__name__}")))
    return ("log", log.name, logging.ERROR, f"a {msg[0]!r} message could not be pickled")


async def _now(fn: Any) -> Any:
    return fn()


class _ForwardLog(logging.Handler):
    """The backend's log records go to the parent's logging (from any thread)."""

    def __init__(self, host: Host) -> None:
        super().__init__()
        self.host = host

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            msg = ("log", record.name, record.levelno, text)
            self.host.loop.call_soon_threadsafe(self.host.post, msg)
        except Exception:  # loop closed: we are exiting
            pass


async def serve(sock: socket.socket, cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(sock=sock)
    backend = HostedBackend(**cfg["kwargs"])
    host = Host(writer, backend)
    pkg = logging.getLogger("asyncflow_hpc")
    pkg.setLevel(cfg.get("log_level", logging.WARNING))
    pkg.addHandler(_ForwardLog(host))
    pkg.propagate = False
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, host.abandon, f"it received {sig.name}")
    frames = wire.FrameReader()
    try:
        while not host.closed.done():
            data = await _read_or_closed(reader, host)
            if not data:
                break  # EOF: the parent is gone (or closed the socket after shutdown)
            for msg in frames.feed(data):
                host.handle(msg)
    finally:
        await host.shutdown()
        if host.tasks:  # replies still on their way (the parent's shutdown request's)
            await asyncio.wait(set(host.tasks), timeout=2)
        host.flush()
        try:
            await asyncio.wait_for(writer.drain(), 5)
        except Exception:  # the parent is gone: nobody to tell
            pass


async def _read_or_closed(reader: asyncio.StreamReader, host: Host) -> bytes:
    """The next bytes from the parent, or b'' once our own shutdown has finished."""
    read = asyncio.ensure_future(reader.read(1 << 20))
    done, _ = await asyncio.wait({read, host.closed}, return_when=asyncio.FIRST_COMPLETED)
    if read in done:
        return read.result()
    read.cancel()
    return b""


def main() -> None:
    # Ctrl-C reaches the whole process group: the parent decides when RP shuts down
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = int(sys.argv[1])
    user_path = os.environ.pop(ORIGINAL_PYTHONPATH, "-")  # see _child_environment()
    if user_path.startswith("="):
        os.environ["PYTHONPATH"] = user_path[1:]
    else:
        os.environ.pop("PYTHONPATH", None)
    os.set_inheritable(fd, False)  # RP's launched programs must not hold the parent's pipe
    # RP forks helpers without exec (its proxy worker): they must not keep our end open,
    # or the parent would not see EOF if this process died
    os.register_at_fork(after_in_child=lambda: _close_quietly(fd))
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    head = _recv_exactly(sock, wire.HEADER.size)
    cfg = pickle.loads(_recv_exactly(sock, wire.HEADER.unpack(head)[0]))
    sys.path[:] = cfg["sys_path"]  # raptor workers get the parent's import path
    code = 0
    try:
        asyncio.run(serve(sock, cfg))
    except BaseException:  # noqa: BLE001 - report, then exit regardless
        traceback.print_exc()
        code = 1
    # RP can leave non-daemon threads behind even after a clean close: do not wait for them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            os._exit(0)  # the parent went away before it said anything
        buf += chunk
    return buf


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


if __name__ == "__main__":
    main()
