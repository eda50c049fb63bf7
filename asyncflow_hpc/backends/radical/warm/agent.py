"""A pool agent: one per node of the pilot, run by RADICAL-Pilot as an ordinary task.

It connects to the campaign's dispatcher (address and token from its environment, see
:mod:`.protocol`), keeps ``slots`` warm worker processes (:mod:`.worker`) and runs at most
``slots`` tasks at once: function tasks on an idle worker, single-core executables as child
processes of its own, each in the folder RP would have given it (``<pilot sandbox>/<task
uid>``; removed afterwards when the task left nothing in it). Start and end are stamped
here, where the task runs.

A timeout or a cancel of a running task kills only that task's process (the worker is
replaced); queued tasks leave the queue without running. A worker that dies fails the one
task it held (LOST). On STOP the agent returns the tasks it has not started (RETURNED, the
dispatcher sends them elsewhere), waits for the running ones, then exits; if the dispatcher
goes away it kills everything and exits at once.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import sys
import time
from typing import Any

from ....framing import frame
from ....framing import read_stream_frame as read_msg
from .protocol import (
    CANCEL,
    CANCELLED,
    ENV_ADDRESS,
    ENV_AGENT,
    ENV_SLOTS,
    ENV_TOKEN,
    EVENTS,
    EXIT,
    FN,
    HELLO,
    LOST,
    NOTFOUND,
    OK,
    RETURNED,
    RUN,
    STARTED,
    STOP,
    TIMEOUT,
)

#: kept from an executable's stderr for its error message
STDERR_TAIL = 4096



class Worker:
    """One warm worker process and the task it runs."""

    __slots__ = ("proc", "fids", "tid", "timer", "ended")

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.fids: set[int] = set()
        self.tid: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ended = False  # the running task was already reported (timeout, cancel)


class Agent:
    def __init__(self, writer: asyncio.StreamWriter, slots: int, sandbox: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.writer = writer
        self.slots = slots
        self.sandbox = sandbox  # the pilot's
        self.queue: collections.deque = collections.deque()  # (tid, kind, timeout, body)
        self.dropped: set[str] = set()  # cancelled while queued
        self.idle: list[Worker] = []
        self.workers: list[Worker] = []
        self.exes: dict[str, asyncio.Task] = {}  # tid -> running executable
        self.fn_running: dict[str, Worker] = {}
        self.fblobs: dict[int, bytes] = {}
        self.out: list[tuple] = []
        self.flush_scheduled = False
        self.stopping = False
        self.done = asyncio.Event()

    # -- events to the dispatcher ------------------------------------------------------
    def emit(self, event: tuple) -> None:
        self.out.append(event)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.out:
            events, self.out = self.out, []
            if not self.writer.is_closing():
                self.writer.write(frame((EVENTS, events)))

    # -- workers -----------------------------------------------------------------------
    async def spawn(self) -> None:
        """A new worker; it takes tasks once it has started (imports done)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "asyncflow_hpc.backends.radical.warm.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        w = Worker(proc)
        self.workers.append(w)
        ready = asyncio.get_running_loop().create_future()
        asyncio.ensure_future(self.read_worker(w, ready))
        await ready

    async def read_worker(self, w: Worker, ready: asyncio.Future) -> None:
        try:
            await read_msg(w.proc.stdout)  # ("ready", pid)
            self.idle.append(w)
            ready.set_result(True)
            self.pump()
            while True:
                tid, status, payload, t0, t1 = await read_msg(w.proc.stdout)
                self.worker_done(w, tid, status, payload, t0, t1)
        except (asyncio.IncompleteReadError, ConnectionError, EOFError):
            pass
        if not ready.done():
            ready.set_result(False)
        await w.proc.wait()
        self.workers.remove(w)
        if w in self.idle:
            self.idle.remove(w)
        tid = w.tid
        if tid is not None:
            self.fn_running.pop(tid, None)
            self.end_timer(w)
            if not w.ended:
                now = time.time()
                self.emit((tid, LOST, f"the worker process (pid {w.proc.pid}) running it died "
                           f"(exit status {w.proc.returncode})", now, now))
        if not self.stopping:
            await asyncio.sleep(0.1)  # a worker that dies at start must not spin
            await self.spawn()
        else:
            self.check_done()

    def worker_done(self, w: Worker, tid: str, status: str, payload: Any, t0: float,
                    t1: float) -> None:
        self.end_timer(w)
        if w.ended:  # killed (timeout, cancel): reported already, and never used again
            return
        self.fn_running.pop(tid, None)
        w.tid = None
        self.emit((tid, status, payload, t0, t1))
        self.idle.append(w)
        self.pump()
        self.check_done()

    @staticmethod
    def end_timer(w: Worker) -> None:
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None

    def kill_worker(self, w: Worker, status: str) -> None:
        """Stop the task ``w`` runs (timeout, cancel): report it now, replace the worker."""
        tid = w.tid
        now = time.time()
        if tid is not None and not w.ended:
            w.ended = True
            self.fn_running.pop(tid, None)
            self.emit((tid, status, None, now, now))
        try:
            w.proc.kill()
        except ProcessLookupError:
            pass

    # -- work --------------------------------------------------------------------------
    def take(self, tasks: list) -> None:
        for task in tasks:
            if task[1] == FN and task[3][1] is not None:
                self.fblobs[task[3][0]] = task[3][1]
        self.queue.extend(tasks)
        self.pump()

    def pump(self) -> None:
        queue, idle = self.queue, self.idle
        while queue and not self.stopping and \
                len(self.fn_running) + len(self.exes) < self.slots:
            tid, kind, timeout, body = queue[0]
            if tid in self.dropped:
                queue.popleft()
                self.dropped.discard(tid)
                continue
            if kind == FN:
                if not idle:
                    return
                queue.popleft()
                w = idle.pop()
                fid, _, argblob = body
                fblob = None
                if fid not in w.fids:
                    fblob = self.fblobs[fid]
                    w.fids.add(fid)
                w.tid = tid
                self.fn_running[tid] = w
                self.emit((tid, STARTED, time.time()))
                w.proc.stdin.write(frame((tid, fid, fblob, argblob)))
                if timeout:
                    w.timer = self.loop.call_later(timeout, self.kill_worker, w, TIMEOUT)
            else:
                queue.popleft()
                self.exes[tid] = asyncio.ensure_future(self.run_exe(tid, timeout, body))

    async def run_exe(self, tid: str, timeout: float | None, body: tuple) -> None:
        command, shell, env, name = body
        folder = os.path.join(self.sandbox, name)  # where RP would have put the task
        t0 = time.time()
        self.emit((tid, STARTED, t0))
        proc = None
        try:
            os.makedirs(folder, exist_ok=True)
            full_env = None
            if env:
                full_env = dict(os.environ)
                full_env.update(env)
            kw: dict[str, Any] = dict(cwd=folder, env=full_env, stdin=asyncio.subprocess.DEVNULL,
                                      stdout=asyncio.subprocess.PIPE,
                                      stderr=asyncio.subprocess.PIPE, start_new_session=True)
            if shell:
                proc = await asyncio.create_subprocess_shell(command, **kw)
            else:
                proc = await asyncio.create_subprocess_exec(*command, **kw)
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
            t1 = time.time()
            if proc.returncode == 0:
                self.emit((tid, OK, out, t0, t1))
            else:
                self.emit((tid, EXIT, (proc.returncode, out, err[-STDERR_TAIL:], folder),
                           t0, t1))
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            self.emit((tid, NOTFOUND, exc.strerror or str(exc), t0, time.time()))
        except asyncio.TimeoutError:
            self.kill_group(proc)
            self.emit((tid, TIMEOUT, None, t0, time.time()))
        except asyncio.CancelledError:
            self.kill_group(proc)
            self.emit((tid, CANCELLED, None, t0, time.time()))
        except Exception as exc:  # noqa: BLE001 - report, never stop the agent
            self.emit((tid, LOST, f"{type(exc).__name__}: {exc}", t0, time.time()))
        finally:
            self.exes.pop(tid, None)
            try:
                os.rmdir(folder)  # only when the task left nothing in it
            except OSError:
                pass
            self.pump()
            self.check_done()

    @staticmethod
    def kill_group(proc: Any) -> None:
        if proc is not None and proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def cancel(self, tids: list[str]) -> None:
        queued = {t[0] for t in self.queue}
        for tid in tids:
            if tid in queued:
                self.dropped.add(tid)
                now = time.time()
                self.emit((tid, CANCELLED, None, now, now))
            elif (w := self.fn_running.get(tid)) is not None:
                self.kill_worker(w, CANCELLED)
            elif (task := self.exes.get(tid)) is not None:
                task.cancel()

    def stop(self) -> None:
        """Return what has not started, finish what runs, then end."""
        self.stopping = True
        now = time.time()
        while self.queue:
            tid = self.queue.popleft()[0]
            if tid not in self.dropped:
                self.emit((tid, RETURNED, None, now, now))
        self.dropped.clear()
        self.check_done()

    def check_done(self) -> None:
        if self.stopping and not self.fn_running and not self.exes:
            self.flush()
            self.done.set()

    def kill_all(self) -> None:
        for w in list(self.workers):
            try:
                w.proc.kill()
            except ProcessLookupError:
                pass
        for task in list(self.exes.values()):
            task.cancel()


async def serve(address: str, token: str, agent_id: str, slots: int) -> None:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # RP runs tasks in <pilot sandbox>/<task uid>; so do we (RP tells its tasks the sandbox)
    sandbox = os.environ.get("RP_PILOT_SANDBOX") or os.path.dirname(os.getcwd())
    agent = Agent(writer, slots, sandbox)
    await asyncio.gather(*(agent.spawn() for _ in range(slots)))  # all warm before we say so
    host = os.environ.get("SLURMD_NODENAME") or socket.gethostname()  # SLURM's node name
    writer.write(frame((HELLO, token, agent_id, host, slots, os.getpid())))

    async def listen() -> None:
        try:
            while True:
                msg = await read_msg(reader)
                if msg[0] == RUN:
                    agent.take(msg[1])
                elif msg[0] == CANCEL:
                    agent.cancel(msg[1])
                elif msg[0] == STOP:
                    agent.stop()
        except (asyncio.IncompleteReadError, ConnectionError, EOFError):
            agent.stopping = True
            agent.kill_all()
            agent.done.set()

    listener = asyncio.ensure_future(listen())
    await agent.done.wait()
    agent.stopping = True
    agent.flush()
    agent.kill_all()
    listener.cancel()
    try:
        await asyncio.wait_for(writer.drain(), 10)
        writer.close()
    except Exception:  # noqa: BLE001 - the dispatcher may be gone
        pass


def main() -> int:
    address, token = os.environ[ENV_ADDRESS], os.environ.pop(ENV_TOKEN)
    agent_id = os.environ.get(ENV_AGENT, "agent")
    slots = max(1, int(os.environ.get(ENV_SLOTS, "1")))  # the cores RP gave this task
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(serve(address, token, agent_id, slots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
