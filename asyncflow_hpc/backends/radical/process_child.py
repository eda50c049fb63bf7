"""The RADICAL-Pilot client process: ``python -m asyncflow_hpc.backends.radical.process_child FD``.

Why a process: RP's client threads (its ZMQ listeners decode every state update with msgpack
and stringify it) hold the GIL for tens of milliseconds during a burst of updates. In the
engine's process that stalls its event loop; here it stalls nobody. This process runs an
:class:`~.inprocess.InProcessClient` on an asyncio loop of its own, bound to a reporter that
forwards every report over the socket FD to the parent (:mod:`.process_parent`), and pushes
the client's ``describe()`` to the parent whenever it changes.

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

from ..._threads import in_thread
from ...errors import BackendError
from ...framing import FrameReader, frame, read_frame
from ...tasks import TaskSpec, TaskState
from ..base import Reporter
from . import messages as msgs
from .cleanup import identities
from .inprocess import InProcessClient
from .process_parent import ORIGINAL_PYTHONPATH

log = logging.getLogger("asyncflow_hpc.backends.radical")


class _Packed:
    """A function task's result as the raptor worker returned it; the parent unpacks it."""

    __slots__ = ("payload",)

    def __init__(self, payload: Any) -> None:
        self.payload = payload


def _packed_call(spec: TaskSpec) -> str:
    return spec.args[0]  # the parent pickled the call already (see messages.spec_from_wire)


def _left_packed(value: Any) -> tuple[bool, Any]:
    return True, _Packed(value)


class Host:
    """Serves the parent's messages; sends reports and replies in batches, one per loop turn."""

    def __init__(self, writer: asyncio.StreamWriter, cfg: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self.writer = writer
        self.client = InProcessClient(cfg["options"], cfg["name"], pack_call=_packed_call,
                                      unpack_result=_left_packed, on_change=self.info_changed)
        self.outbox: list[tuple] = []
        self.flush_handle: asyncio.Handle | None = None
        self.info_due = False  # an "info" message is scheduled
        self.closing: asyncio.Task | None = None
        self.abandoned: str | None = None  # why we shut down without the parent asking
        self.closed = self.loop.create_future()  # set once RP is shut down
        self.tasks: set[asyncio.Task] = set()
        self.client.bind(Reporter(self.report, self.loop))

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
            data = frame(batch)
        except Exception:  # a value that does not pickle: send the rest, fail that one
            data = b"".join(frame([m]) if _pickles(m) else frame([_unpicklable(m)])
                            for m in batch)
        self.writer.write(data)  # buffered by asyncio; the parent drains it from its loop

    def info_changed(self) -> None:
        """The client's description changed (any thread): send it once this loop turn."""
        if not self.info_due:
            self.info_due = True
            try:
                self.loop.call_soon_threadsafe(self.push_info)
            except RuntimeError:  # loop closed: we are exiting
                pass

    def push_info(self) -> None:
        self.info_due = False
        self.post(("info", self.client.describe()))

    def report(self, uid: str, state: Any, value: Any, error: BaseException | None,
               node: str | None, stamps: Any = None) -> None:
        """The client's reporter sink (on this loop): one report, forwarded."""
        if state is TaskState.CANCELLED and self.abandoned:
            # the user did not cancel it: a signal ended this process under the engine
            state, error = TaskState.FAILED, BackendError(
                f"the RADICAL-Pilot client process shut down ({self.abandoned}) before the "
                "task finished")
        code = msgs.STATE_CODES[state]
        if isinstance(value, _Packed):
            code, value = msgs.PACKED, value.payload
        self.post(("r", uid, code, value, msgs.dump_error(error) if error else None, node))

    def reply(self, rid: int, coro: Any) -> None:
        async def run() -> None:
            try:
                value = await coro
            except BaseException as exc:  # noqa: BLE001 - goes to the parent's awaiter
                self.post(("reply", rid, False, msgs.dump_error(exc)))
            else:
                self.post(("reply", rid, True, value))

        task = self.loop.create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- incoming ---------------------------------------------------------------------
    def handle(self, msg: tuple) -> None:
        op = msg[0]
        client = self.client
        if op == "submit":
            client.submit([msgs.spec_from_wire(t) for t in msg[1]])
        elif op == "cancel":
            client.cancel(msg[1])
        elif op == "start":
            self.reply(msg[1], self._start())
        elif op == "wait":
            self.reply(msg[1], client.wait_active())
        elif op == "call":
            self.reply(msg[1], self._call(msg[2]))
        elif op == "shutdown":
            self.reply(msg[1], self.shutdown())
        else:
            log.error("RADICAL-Pilot client process: unknown message %r", op)

    async def _start(self) -> list[tuple[int, float]]:
        await self.client.start()
        self.push_info()  # before the reply: the parent's describe() is current at once
        return identities(self.client.own_pids)

    async def _call(self, blob: bytes) -> bytes:
        import cloudpickle

        fn, args = pickle.loads(blob)
        value = await in_thread(fn, self.client, *args)
        return cloudpickle.dumps(value)

    def abandon(self, why: str) -> None:
        """Shut down on our own (a signal): unfinished tasks fail instead of 'cancelled'."""
        if self.closing is None:
            self.abandoned = why
            log.warning("RADICAL-Pilot client process: %s; shutting down", why)
        self.shutdown()

    def shutdown(self) -> asyncio.Task:
        """RP down (once, however many ask: the parent, EOF, SIGTERM)."""
        if self.closing is None:
            async def close() -> None:
                try:
                    await self.client.shutdown()
                    await asyncio.sleep(0)  # the reports of the leftover tasks go out first
                finally:
                    self.push_info()
                    if not self.closed.done():
                        self.closed.set_result(None)

            self.closing = self.loop.create_task(close())
        return self.closing


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
        return ("reply", msg[1], False, msgs.dump_error(
            TypeError(f"the reply could not be pickled: {type(msg[3]).__name__}")))
    return ("log", log.name, logging.ERROR, f"a {msg[0]!r} message could not be pickled")


class _ForwardLog(logging.Handler):
    """The client's log records go to the parent's logging (from any thread)."""

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
    host = Host(writer, cfg)
    pkg = logging.getLogger("asyncflow_hpc")
    pkg.setLevel(cfg.get("log_level", logging.WARNING))
    pkg.addHandler(_ForwardLog(host))
    pkg.propagate = False
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, host.abandon, f"it received {sig.name}")
    frames = FrameReader()
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
    user_path = os.environ.pop(ORIGINAL_PYTHONPATH, "-")  # see process_parent
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
    try:
        cfg = read_frame(sock.recv)
    except EOFError:
        os._exit(0)  # the parent went away before it said anything
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


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


if __name__ == "__main__":
    main()
