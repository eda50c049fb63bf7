"""Local backend: task bodies in the user's executor, executables as subprocesses in their
own process group.

Why each choice:

* Every function body runs in the executor the user gave, never on the engine's loop, so a
  body that blocks (numpy, a solver, ``time.sleep``) holds up no other workflow. An ``async
  def`` body runs on an event loop kept per worker thread (:mod:`._worker_loops`): one that
  awaits leaves its worker free for other bodies meanwhile. The reference ran each one
  through a fresh ``asyncio.run``, which made a no-op task cost milliseconds.
* ``inline=True`` tasks (an opt-in) run their ``async def`` body on the engine's own loop,
  started eagerly: about what ``asyncio.create_task`` costs, for bodies that never block.
* Processes: the function is shipped by cloudpickle (closures and lambdas work); an ``async
  def`` body runs on an event loop kept per worker process.
* Executables are started with ``asyncio.create_subprocess_exec`` in a new session, so
  cancelling or timing out a task can kill the whole process group (``sh -c`` and its
  children included), not just the immediate child.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from .._threads import ThreadCall
from ..descriptions import check_values
from ..errors import ConfigurationError, TaskTimeoutError
from ..tasks import TaskKind, TaskSpec
from ._bodies import Elsewhere, call_body, dumps_call, run_pickled, start_body
from ._executables import ExecutableRunner, SpilledOutput
from ._process_pool import ProcessRunner
from ._worker_loops import Door, WorkerLoops
from .base import ExecutionBackend
from .radical.keys import TASK_FIELDS as PILOT_TASK_KEYS

__all__ = ["LocalExecutionBackend", "SpilledOutput"]

_EXECUTABLE = TaskKind.EXECUTABLE
#: task_description keys with a meaning here
LOCAL_KEYS = frozenset({"cwd", "env", "environment", "sandbox", "pre_exec", "ranks", "stdin"})


class LocalExecutionBackend(ExecutionBackend):
    """Run tasks on this machine.

    ``executor`` runs plain (non-async) function tasks; its size also bounds how many
    executables run at once unless ``max_processes`` says otherwise (``0`` = no bound).
    ``kill_grace`` is how long a cancelled executable gets between SIGTERM and SIGKILL.
    """

    name = "local"
    #: the local keys, and the pilot's resource keys: those are accepted (and mean nothing on
    #: one machine) so that a campaign written for a cluster runs here unchanged
    task_keys = LOCAL_KEYS | PILOT_TASK_KEYS
    key_aliases = {"workdir": "cwd", "nprocs": "ranks", "np": "ranks",
                   "cores": "cores_per_rank", "gpus": "gpus_per_rank", "walltime": "timeout",
                   "cpus_per_task": "cores_per_rank", "gpus_per_task": "gpus_per_rank",
                   "ntasks": "ranks",
                   "cmd": "executable", "retry": "retries"}

    def check_task_description(self, td: Mapping[str, Any], task: str = "") -> None:
        super().check_task_description(td, task)
        check_values(td, task)

    def __init__(self, executor: Executor | None = None, *, name: str = "local",
                 max_processes: int | None = None, kill_grace: float = 2.0,
                 max_output: int = 64 << 20) -> None:
        super().__init__()
        if isinstance(max_output, bool) or not isinstance(max_output, int) or max_output < 0:
            raise ConfigurationError(f"max_output must be a number of bytes >= 0, got {max_output!r}")
        # stdout kept in memory per executable; the whole output beyond it goes to a file
        self.max_output = max_output
        if executor is not None and not isinstance(executor, Executor):
            raise ConfigurationError(
                f"LocalExecutionBackend needs a concurrent.futures Executor, got {executor!r}")
        self.executor: Executor = executor if executor is not None else ThreadPoolExecutor(
            thread_name_prefix="asyncflow-hpc")
        self.name = name
        self._processes = isinstance(self.executor, ProcessPoolExecutor)
        if max_processes is None:
            max_processes = getattr(self.executor, "_max_workers", None) or (os.cpu_count() or 1)
        if not isinstance(max_processes, int) or max_processes < 0:
            raise ConfigurationError(f"max_processes must be an integer >= 0, got {max_processes!r}")
        self.max_processes = max_processes
        self.kill_grace = kill_grace
        self._running: dict[str, asyncio.Future] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._host = socket.gethostname()
        self._executables: ExecutableRunner | None = None
        self._door: Door | None = None
        self._loops: WorkerLoops | None = None
        self._pool: ProcessRunner | None = None
        self._workers = getattr(self.executor, "_max_workers", None) or (os.cpu_count() or 1)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": type(self).__name__, "host": self._host,
                "executor": type(self.executor).__name__, "max_processes": self.max_processes}

    async def _start(self) -> None:
        self._executables = ExecutableRunner(
            self._executable_started,
            max_processes=self.max_processes, kill_grace=self.kill_grace,
            max_output=self.max_output)

    def _executable_started(self, uid: str) -> None:
        self.reporter.running(uid, self._host)

    def _the_door(self) -> Door:
        if self._door is None:
            self._door = Door(self.reporter.loop, self._from_worker)
        return self._door

    def _worker_loops(self) -> WorkerLoops:
        if self._loops is None:
            self._the_door()
            self._loops = WorkerLoops(self.executor, self._workers, self._report_from_worker)
        return self._loops

    def _process_runner(self) -> ProcessRunner:
        if self._pool is None:
            self._the_door()
            self._pool = ProcessRunner(self.executor, self.reporter.loop,  # type: ignore[arg-type]
                                       run_pickled, self._from_pool, self._started_in_pool)
        return self._pool

    def _started_in_pool(self, uid: str, at: float) -> None:
        """On the runner's reader thread: a pool process started a body at ``at``."""
        self._door.put(("running", uid, None, (at, None), None))  # type: ignore[union-attr]

    def _from_pool(self, uid: str, ok: bool, value: Any, stamps: Any) -> None:
        if not self._forget(uid):
            return  # cancelled or timed out by us: already reported
        if ok:
            self.reporter.done(uid, value, stamps=stamps)
        else:
            self.reporter.failed(uid, value, stamps=stamps)

    def _report_from_worker(self, kind: str, uid: str, value: Any, stamps: Any,
                            token: Any) -> None:
        self._door.put((kind, uid, value, stamps, token))  # type: ignore[union-attr]

    def _from_worker(self, item: tuple[str, str, Any, Any, Any]) -> None:
        """On the loop: a worker thread's, worker loop's or pool process's report. ``token``
        is the attempt's entry in ``_running`` (None: not checked): a report of an attempt
        that timed out and was retried must not settle the next attempt."""
        kind, uid, value, stamps, token = item
        if kind == "running":
            current = self._running.get(uid)
            if current is not None and (token is None or current is token):
                if not stamps[0]:  # a thread body's start, not stamped yet: see _call_in_thread
                    self.reporter.loop.call_soon(self._from_worker, item)
                    return
                self.reporter.running(uid, self._host, at=stamps[0])
            return
        if not self._forget(uid, token):
            return  # cancelled or timed out by us: already reported
        if kind == "done":
            self.reporter.done(uid, value, stamps=stamps)
        elif kind == "failed":
            self.reporter.failed(uid, value, stamps=stamps)
        else:
            self.reporter.cancelled(uid)

    # ------------------------------------------------------------------ submit
    def submit(self, specs: Sequence[TaskSpec]) -> None:
        reporter = self.reporter
        loop = reporter.loop
        running = self._running
        for spec in specs:
            uid = spec.uid
            if spec.description and spec.kind is not _EXECUTABLE and (
                    spec.description.get("stdout") or spec.description.get("stderr")):
                loop.call_soon(reporter.failed, uid, ConfigurationError(
                    f"task {spec.name!r}: task_description 'stdout'/'stderr' name the output "
                    "files of an executable task; a function task's output is not captured "
                    "on the local backend"))
                continue
            if spec.kind is _EXECUTABLE:
                fut: asyncio.Future = loop.create_task(self._executables.run(spec))  # type: ignore[union-attr]
            elif spec.is_async and not self._processes and not spec.inline:
                loops = self._worker_loops()
                token = running[uid] = Elsewhere(functools.partial(loops.cancel, uid))
                loops.submit(uid, functools.partial(start_body, spec), token)
                if spec.timeout:
                    self._timers[uid] = loop.call_later(spec.timeout, self._timed_out, uid, spec)
                continue
            elif spec.is_async and not self._processes and not spec.files:
                # inline (a task with files is staged in a worker thread, below, instead)
                try:
                    coro = spec.function(*spec.args, **spec.kwargs)  # type: ignore[misc]
                except BaseException as exc:  # bad arguments: report on the next iteration
                    loop.call_soon(reporter.failed, uid, exc)
                    continue
                # Eager start: run the coroutine up to its first suspension right here. One
                # that finishes without suspending costs no Task and no loop round trip.
                ctx = contextvars.copy_context()
                try:
                    yielded = ctx.run(coro.send, None)
                except StopIteration as stop:
                    reporter.done(uid, stop.value)
                    continue
                except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt too: the task's
                    reporter.failed(uid, exc)  # error, the same on every path
                    continue
                running[uid] = loop.create_task(self._run_coroutine(uid, coro, yielded),
                                                context=ctx)
                reporter.running(uid, self._host)
                if spec.timeout:
                    self._timers[uid] = loop.call_later(spec.timeout, self._timed_out, uid, spec)
                continue
            elif self._processes:
                try:
                    blob = dumps_call(spec)
                except Exception as exc:
                    loop.call_soon(reporter.failed, uid, ConfigurationError(
                        f"task {spec.name!r} cannot be sent to a process pool: its function or "
                        f"arguments are not picklable ({type(exc).__name__}: {exc})"))
                    continue
                pool = self._process_runner()
                running[uid] = Elsewhere(functools.partial(pool.give_up, uid))
                pool.submit(spec, blob)  # the pool process reports the start
                if spec.timeout:
                    self._timers[uid] = loop.call_later(spec.timeout, self._timed_out, uid, spec)
                continue
            else:
                token = Elsewhere(None)
                try:
                    cfut = self.executor.submit(self._call_in_thread, uid, spec,
                                                self._the_door(), token)
                except RuntimeError as exc:  # the executor was shut down
                    loop.call_soon(reporter.failed, uid, exc)
                    continue
                token.cancel = cfut.cancel  # stops it only before it started
                running[uid] = token
                if spec.timeout:
                    self._timers[uid] = loop.call_later(spec.timeout, self._timed_out, uid, spec)
                continue
            running[uid] = fut
            fut.add_done_callback(functools.partial(self._finished, uid))
            if spec.timeout:
                self._timers[uid] = loop.call_later(spec.timeout, self._timed_out, uid, spec)

    async def _run_coroutine(self, uid: str, coro: Any, yielded: Any) -> None:
        """Drive a coroutine that suspended during its eager start, as a Task would."""
        try:
            while True:
                if yielded is None:  # a bare yield (asyncio.sleep(0)): give the loop a turn
                    await asyncio.sleep(0)
                    yielded = coro.send(None)
                    continue
                # take over the wait the coroutine announced, exactly as Task.__step does
                yielded._asyncio_future_blocking = False
                try:
                    await yielded  # the future the coroutine waits on; it reads the outcome
                except asyncio.CancelledError:
                    if not yielded.cancelled():  # we were cancelled, not what it awaited
                        yielded = coro.throw(asyncio.CancelledError())
                        continue
                except Exception:
                    pass
                yielded = coro.send(None)
        except StopIteration as stop:
            if self._forget(uid):
                self.reporter.done(uid, stop.value)
        except asyncio.CancelledError:
            if self._forget(uid):  # not cancelled through us: the coroutine cancelled itself
                self.reporter.cancelled(uid)
            raise
        except BaseException as exc:  # noqa: BLE001 - the task's error, on every path alike
            if self._forget(uid):
                self.reporter.failed(uid, exc)
        finally:
            coro.close()

    def _forget(self, uid: str, token: Any = None) -> bool:
        """Drop a finished task; False when cancel() or a timeout got there first (or, with
        ``token``, when the entry is another attempt's)."""
        current = self._running.get(uid)
        if current is None or (token is not None and current is not token):
            return False
        del self._running[uid]
        if self._timers:
            timer = self._timers.pop(uid, None)
            if timer is not None:
                timer.cancel()
        return True

    @staticmethod
    def _call_in_thread(uid: str, spec: TaskSpec, door: Door, token: Any) -> None:
        """In a worker thread: run the body; its start and end go through the one door, in
        order (a thread's next start never overtakes its last end)."""
        # The start is stamped after the report is queued: queuing may wake the loop, a
        # system call during which other threads take the GIL; a stamp taken before it could
        # be late by their time slices. The loop waits for the stamp (see _from_worker).
        box = [0.0]
        door.put(("running", uid, None, box, token))
        box[0] = start = time.time()
        try:
            value = call_body(spec.function, spec.args, spec.kwargs, spec.files, spec.name)
        except BaseException as exc:  # noqa: BLE001 - the task's error, whatever it is
            door.put(("failed", uid, exc, (start, time.time()), token))
        else:
            door.put(("done", uid, value, (start, time.time()), token))

    def _finished(self, uid: str, fut: asyncio.Future) -> None:
        if self._running.get(uid) is not fut:
            return  # cancelled or timed out by us (already reported), or a retry's entry
        del self._running[uid]
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()
        if fut.cancelled():
            self.reporter.cancelled(uid)
            return
        exc = fut.exception()
        if exc is None:
            self.reporter.done(uid, fut.result())
        else:
            self.reporter.failed(uid, exc)

    def _timed_out(self, uid: str, spec: TaskSpec) -> None:
        self._timers.pop(uid, None)
        fut = self._running.pop(uid, None)
        if fut is None:
            return
        fut.cancel()  # kills an executable's process group; a thread cannot be stopped
        if spec.kind is _EXECUTABLE:
            what = "killed"
        elif spec.is_async and not self._processes:
            what = "cancelled"  # a coroutine, on a worker loop or inline
        else:
            what = "abandoned (a running thread or pool process cannot be interrupted)"
        self.reporter.failed(uid, TaskTimeoutError(
            f"task {spec.name!r} exceeded its timeout of {spec.timeout:g} s and was {what}"))

    def cancel(self, uid: str) -> None:
        timer = self._timers.pop(uid, None)
        if timer is not None:
            timer.cancel()
        fut = self._running.pop(uid, None)
        if fut is not None:
            fut.cancel()

    # ------------------------------------------------------------------ shutdown
    async def _shutdown(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        pending = list(self._running.values())
        self._running.clear()
        for fut in pending:
            fut.cancel()
        pending = [f for f in pending if isinstance(f, asyncio.Future)]
        if pending:
            await asyncio.wait(pending, timeout=self.kill_grace + 10)
        pools = [self.executor]
        if self._pool is not None:  # re-created after crashes: the current one and the old
            pools = [self._pool.pool, *self._pool.old_pools]
            if self._pool.abandoned:  # a timed-out task still runs there: do not wait for it
                _terminate_workers(pools)
        for pool in pools:
            # a process pool forgets its manager thread in shutdown(wait=False): keep it
            manager = getattr(pool, "_executor_manager_thread", None)
            pool.shutdown(wait=False, cancel_futures=True)
            # wait (bounded) for the workers to exit, on a thread of our own that we join:
            # afterwards no thread of ours is left (a body stuck in a thread cannot be stopped)
            waiter = ThreadCall(_shut, pool, manager, name="asyncflow-hpc-shutdown")
            if not await waiter.wait(5) and self._processes:
                _terminate_workers([pool])  # busy after the wait: end them
                await waiter.wait(5)
        if self._pool is not None:
            self._pool.close()
        if self._loops is not None:
            self._loops.close()
        if self._executables is not None:
            self._executables.close()
            self._executables = None


def _shut(pool: Executor, manager: threading.Thread | None) -> None:
    pool.shutdown(wait=True)
    if manager is not None:
        manager.join()


def _terminate_workers(pools: list[Executor]) -> None:
    for pool in pools:
        for p in list((getattr(pool, "_processes", None) or {}).values()):
            if p.is_alive():
                p.terminate()


