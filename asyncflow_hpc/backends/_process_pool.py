"""Function tasks in a process pool: one crashed worker costs one task.

A ``ProcessPoolExecutor`` is *broken* for good when one worker dies (``os._exit``, a signal,
an exception that cannot be pickled back): every task in flight fails with
``BrokenProcessPool`` and so does every later submission. :class:`ProcessRunner` makes that
cost one task:

* On a break it makes a new pool of the same kind, and re-runs the tasks that were in flight
  as *suspects*, one at a time, holding back other work meanwhile. A suspect that breaks the
  pool again while it runs alone is the culprit: it fails with :class:`WorkerLostError`; the
  others finish normally.
* Workers start clean (:func:`_worker_start`, chained before the user's initializer): the
  engine's signal handlers and asyncio's wake-up fd are not inherited (a SIGTERM to a worker
  no longer reaches the campaign's loop), SIGINT is left to the campaign, and on Linux a
  worker dies with the campaign (``PR_SET_PDEATHSIG``) instead of living on as an orphan.
* A timed-out or cancelled task cannot be stopped inside a worker; the runner remembers it,
  and shutdown then ends the workers at once instead of waiting for it.
* Bodies are stamped in the worker (:func:`_run_stamped`): the start goes back at once over a
  pipe shared by the pool's workers (read by one thread of the runner), the start and end
  with the result.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import WorkerLostError
from ..tasks import TaskSpec

__all__ = ["ProcessRunner", "die_with_parent", "prepare_pool"]

#: (uid, ok, value or exception, (start, end) or None) on the loop
Done = Callable[[str, bool, Any, Any], None]
#: (uid, start) on the runner's reader thread
Started = Callable[[str, float], None]

_starts: Any = None  # in a worker: where it tells the runner that a body started


def _worker_start(user_init: Any, user_args: tuple, starts: Any = None) -> None:
    """First thing in every worker process (see the module docstring)."""
    global _starts
    _starts = starts
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the campaign's to handle
    die_with_parent()
    if user_init is not None:
        user_init(*user_args)


def die_with_parent() -> None:
    """On Linux, have this process killed when its parent ends (``PR_SET_PDEATHSIG``)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
        except Exception:  # noqa: BLE001 - best effort
            pass


def prepare_pool(pool: ProcessPoolExecutor, starts: Any = None) -> None:
    """Chain :func:`_worker_start` before the pool's own initializer (workers not started yet
    pick it up; the pool starts its workers lazily); ``starts`` is the runner's start queue."""
    init = getattr(pool, "_initializer", None)
    if getattr(init, "func", None) is _worker_start:
        return
    args = getattr(pool, "_initargs", ())
    pool._initializer = functools.partial(  # type: ignore[attr-defined]
        _worker_start, init, args, starts)
    pool._initargs = ()  # type: ignore[attr-defined]


def renew(pool: ProcessPoolExecutor) -> ProcessPoolExecutor:
    """A fresh pool like ``pool`` (same size, start method, initializer and start queue)."""
    init = getattr(pool, "_initializer", None)
    ours = getattr(init, "func", None) is _worker_start
    new = ProcessPoolExecutor(
        max_workers=getattr(pool, "_max_workers", None),
        mp_context=getattr(pool, "_mp_context", None),
        initializer=init.args[0] if ours else init,
        initargs=init.args[1] if ours else getattr(pool, "_initargs", ()))
    prepare_pool(new, init.args[2] if ours else None)
    return new


def _run_stamped(call: Callable[..., Any], uid: str, *args: Any) -> tuple[tuple[float, float], Any]:
    """In a worker: tell the runner the body starts, run it, return its stamps and value
    (an exception carries its stamps as ``asyncflow_stamps``, removed by the runner)."""
    start = time.time()
    if _starts is not None:
        _starts.put((uid, start))
    try:
        value = call(*args)
    except BaseException as exc:
        try:
            exc.asyncflow_stamps = (start, time.time())  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - an exception type without a __dict__
            pass
        raise
    return (start, time.time()), value


def exit_codes(pool: ProcessPoolExecutor) -> list[int]:
    """Exit codes of the pool's workers that ended abnormally (negative: killed by a signal)."""
    procs = getattr(pool, "_processes", None) or {}
    return [p.exitcode for p in list(procs.values()) if p.exitcode not in (None, 0)]


class ProcessRunner:
    """Runs pickled calls in a process pool that heals; see the module docstring."""

    def __init__(self, pool: ProcessPoolExecutor, loop: asyncio.AbstractEventLoop,
                 call: Callable[..., Any], done: Done, started: Started) -> None:
        context = getattr(pool, "_mp_context", None)
        if context is None:
            import multiprocessing

            context = multiprocessing.get_context()
        self._starts = context.SimpleQueue()
        prepare_pool(pool, self._starts)
        self.pool = pool
        self._loop = loop
        self._call = call  # the function run in the worker: call(blob, plan)
        self._done = done
        self._reader = threading.Thread(target=self._read_starts, args=(started,),
                                        name="asyncflow-hpc-pool-starts", daemon=True)
        self._reader.start()
        self._running: dict[str, tuple[asyncio.Future, TaskSpec, bytes, bool]] = {}
        self._suspects: collections.deque[tuple[TaskSpec, bytes]] = collections.deque()
        self._suspect_running = False
        self._held: list[tuple[TaskSpec, bytes]] = []
        self._broken_seen: set[int] = set()
        self.abandoned = 0  # tasks given up (timeout/cancel) still running in a worker
        self.old_pools: list[ProcessPoolExecutor] = []

    def submit(self, spec: TaskSpec, blob: bytes) -> None:
        if self._suspects or self._suspect_running:
            self._held.append((spec, blob))  # quarantine: suspects run alone
            return
        self._start(spec, blob, suspect=False)

    def _read_starts(self, started: Started) -> None:
        while True:
            item = self._starts.get()
            if item is None:
                return
            started(*item)

    def close(self) -> None:
        """Stop the reader thread (after the pool's workers have ended)."""
        if self._reader.is_alive():
            self._starts.put(None)
            self._reader.join(5)
        self._starts.close()

    def _start(self, spec: TaskSpec, blob: bytes, suspect: bool) -> None:
        args = (_run_stamped, self._call, spec.uid, blob, spec.files)
        try:
            fut = self._loop.run_in_executor(self.pool, *args)
        except BrokenProcessPool:
            self._renew()
            fut = self._loop.run_in_executor(self.pool, *args)
        self._running[spec.uid] = (fut, spec, blob, suspect)
        fut.add_done_callback(functools.partial(self._finished, spec.uid))

    def give_up(self, uid: str) -> bool:
        """Forget a task (timed out or cancelled); True if it was running in a worker."""
        entry = self._running.pop(uid, None)
        if entry is None:
            for queue in (self._suspects, self._held):
                for item in list(queue):
                    if item[0].uid == uid:
                        queue.remove(item)
            return False
        fut, _, _, suspect = entry
        fut.cancel()
        # it may already run in a worker, where it cannot be stopped (asyncio's wrapper
        # cancels whatever the pool's own future says): shutdown must not wait for it
        self.abandoned += 1
        if suspect:
            self._suspect_running = False
            self._loop.call_soon(self._next_suspect)
        return True

    def _finished(self, uid: str, fut: asyncio.Future) -> None:
        entry = self._running.get(uid)
        if entry is None or entry[0] is not fut:
            return  # given up already
        del self._running[uid]
        _, spec, blob, suspect = entry
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, BrokenProcessPool):
            codes = self._renew()
            if suspect:
                self._suspect_running = False
                how = _how(codes)
                self._done(uid, False, WorkerLostError(
                    f"the process-pool worker running task {spec.name!r} died{how}: the body "
                    "called os._exit, was killed by a signal, or raised an exception that "
                    "cannot be sent back; the pool was re-created for the other tasks"), None)
            else:
                self._suspects.append((spec, blob))
            # after every in-flight sibling has landed here: run suspects one at a time
            self._loop.call_soon(self._next_suspect)
            return
        if suspect:
            self._suspect_running = False
            self._loop.call_soon(self._next_suspect)
        if exc is None:
            stamps, value = fut.result()
            self._done(uid, True, value, stamps)
        else:
            stamps = exc.__dict__.pop("asyncflow_stamps", None) if hasattr(exc, "__dict__") \
                else None
            self._done(uid, False, exc, stamps)

    def _next_suspect(self) -> None:
        if self._suspect_running or any(e[3] is False for e in self._running.values()):
            return  # wait until nothing else runs, so that a crash points at one task
        if self._suspects:
            spec, blob = self._suspects.popleft()
            self._suspect_running = True
            self._start(spec, blob, suspect=True)
            return
        held, self._held = self._held, []
        for spec, blob in held:
            self._start(spec, blob, suspect=False)

    def _renew(self) -> list[int]:
        """Replace a broken pool (once per break); exit codes of the workers that died."""
        old = self.pool
        if id(old) in self._broken_seen:
            return []
        self._broken_seen.add(id(old))
        codes = exit_codes(old)
        old.shutdown(wait=False, cancel_futures=True)
        self.old_pools.append(old)
        self.pool = renew(old)
        return codes


def _how(codes: list[int]) -> str:
    if not codes:
        return ""
    code = codes[0]
    if code < 0:
        try:
            return f" (killed by {signal.Signals(-code).name})"
        except ValueError:
            return f" (killed by signal {-code})"
    return f" (exit code {code})"
