"""``async def`` bodies on event loops owned by the executor's worker threads.

The engine's loop never runs a task body (unless the task is ``inline``). An ``async def``
body runs on an event loop that belongs to one worker thread of the user's executor; the
loop is made once per thread and kept, so a body costs a ``create_task``, not an
``asyncio.run``.

How work is shared out, so that blocking bodies run in parallel and awaiting bodies do not
hold workers idle:

* Jobs wait in one queue. A worker loop takes the next job only when it is *idle*: about to
  block in ``select`` because none of its coroutines is ready to run. A body that awaits
  (``asyncio.sleep``, I/O) makes its loop idle, so the loop takes more jobs meanwhile; a body
  that blocks (``time.sleep``, numpy) keeps its loop busy, so the next job goes elsewhere.
* When jobs arrive and no loop is idle, a new *runner* (one executor job that drives a worker
  loop) is started, up to the executor's number of workers. A runner returns its thread to
  the executor when its loop has no coroutine left and the queue is empty.
* Results come back through one :class:`Door`: a thread-safe queue drained on the engine's
  loop, woken at most once per batch (the pattern of ``asyncio.wrap_future``, batched).
"""

from __future__ import annotations

import asyncio
import collections
import selectors
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

__all__ = ["Door", "WorkerLoops"]


class Door:
    """One thread-safe way onto the engine's loop: ``put`` from any thread, handled in batches.

    ``handle(item)`` runs on ``loop`` for every item, in order.
    """

    __slots__ = ("_loop", "_handle", "_items", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, handle: Callable[[Any], None]) -> None:
        self._loop = loop
        self._handle = handle
        self._items: collections.deque = collections.deque()
        self._scheduled = False

    def put(self, item: Any) -> None:
        self._items.append(item)
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the engine's loop is closed: nobody waits any more
                pass

    def _drain(self) -> None:
        self._scheduled = False  # before popping: a put racing with us schedules again
        items, handle = self._items, self._handle
        while items:
            handle(items.popleft())


class _Job:
    __slots__ = ("uid", "start", "task", "loop", "began", "token")

    def __init__(self, uid: str, start: Callable[[], Any], token: Any = None) -> None:
        self.uid = uid
        self.token = token  # the caller's, handed back with every report (one per attempt)
        self.start = start  # called on the worker loop: returns a coroutine (or raises)
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.began = 0.0  # when the worker loop started it (time.time() there)


class _Worker:
    """One worker thread's loop and what it is doing."""

    __slots__ = ("loop", "busy", "idle", "fresh", "running", "finish")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.busy = False  # a runner drives this loop now
        self.idle = False  # blocked in select with nothing ready
        self.fresh = False  # its runner has not taken its first turn yet
        self.running = 0  # coroutines in flight on this loop
        self.finish: asyncio.Future | None = None


class _IdleSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The worker loop's selector: before the loop blocks, it may take a job from the queue."""

    def __init__(self, pool: WorkerLoops) -> None:
        super().__init__()
        self._pool = pool
        self.worker: _Worker | None = None

    def select(self, timeout: float | None = None):  # type: ignore[override]
        worker = self.worker
        if worker is not None and worker.busy and (timeout is None or timeout > 0):
            if self._pool._idle_turn(worker):
                timeout = 0
        events = super().select(timeout)
        if worker is not None:
            worker.idle = False
        return events


class WorkerLoops:
    """Runs coroutines on loops kept per worker thread of ``executor``; see the module doc.

    ``report(kind, uid, value, stamps, token)`` is called on a worker thread with ``kind``
    one of ``"running"``, ``"done"``, ``"failed"``, ``"cancelled"``, ``stamps`` the body's
    ``(start, end)`` as the worker loop saw them (``end`` None while it runs) and ``token``
    what :meth:`submit` was given; the caller routes it through a :class:`Door`.
    """

    def __init__(self, executor: Executor, workers: int,
                 report: Callable[[str, str, Any, Any, Any], None]) -> None:
        self._executor = executor
        self._max = max(1, workers)
        self._report = report
        self._lock = threading.Lock()
        self._queue: collections.deque[_Job] = collections.deque()
        self._workers: list[_Worker] = []  # every loop made (closed at shutdown)
        self._idle: set[_Worker] = set()
        self._runners = 0
        self._starting = 0  # runners submitted that have not taken their first turn
        self._jobs: dict[str, _Job] = {}
        self._local = threading.local()
        self._closed = False

    # ------------------------------------------------------------------ engine side
    def submit(self, uid: str, start: Callable[[], Any], token: Any = None) -> None:
        """Queue one body; ``start()`` makes its coroutine on the worker loop."""
        job = _Job(uid, start, token)
        self._jobs[uid] = job
        wake = None
        new_runner = False
        with self._lock:
            self._queue.append(job)
            while self._idle:
                w = self._idle.pop()
                if w.idle and w.busy:
                    wake = w
                    break
            if (wake is None and self._runners < self._max
                    and len(self._queue) > self._starting):
                self._runners += 1
                self._starting += 1
                new_runner = True
        if wake is not None:
            wake.loop.call_soon_threadsafe(_nothing)
        if new_runner:
            try:
                self._executor.submit(self._serve)
            except RuntimeError:  # executor shut down
                with self._lock:
                    self._runners -= 1
                    self._starting -= 1

    def cancel(self, uid: str) -> None:
        job = self._jobs.pop(uid, None)
        if job is None:
            return
        with self._lock:
            try:
                self._queue.remove(job)
                return  # never started
            except ValueError:
                pass
        if job.loop is not None and job.task is not None:
            try:
                job.loop.call_soon_threadsafe(job.task.cancel)
            except RuntimeError:
                pass

    def forget(self, uid: str) -> None:
        self._jobs.pop(uid, None)

    def _drop(self, job: _Job) -> None:
        """Forget a job that ended, unless a later attempt of its task took its place."""
        if self._jobs.get(job.uid) is job:
            del self._jobs[job.uid]

    def close(self) -> None:
        """Close the kept loops (after the executor's threads have exited)."""
        self._closed = True
        for w in self._workers:
            if not w.loop.is_running() and not w.loop.is_closed():
                w.loop.close()
        self._workers.clear()

    # ------------------------------------------------------------------ worker side
    def _serve(self) -> None:
        """An executor job: drive this thread's loop until it has nothing left to do."""
        worker: _Worker | None = getattr(self._local, "worker", None)
        if worker is None or worker.loop.is_closed():
            selector = _IdleSelector(self)
            loop = asyncio.SelectorEventLoop(selector)
            worker = _Worker(loop)
            selector.worker = worker
            self._local.worker = worker
            with self._lock:
                self._workers.append(worker)
        loop = worker.loop
        asyncio.set_event_loop(loop)
        worker.finish = loop.create_future()
        worker.fresh = worker.busy = True
        try:
            loop.run_until_complete(worker.finish)
        finally:
            worker.busy = False
            worker.finish = None
            asyncio.set_event_loop(None)

    def _idle_turn(self, worker: _Worker) -> bool:
        """On the worker loop, before it blocks: take a job, or wait idle, or stop."""
        with self._lock:
            if worker.fresh:
                worker.fresh = False
                self._starting -= 1
            if self._queue and not self._closed:
                job = self._queue.popleft()
            else:
                job = None
                if worker.running == 0:
                    # nothing to run and nothing queued: give the thread back
                    self._runners -= 1
                    worker.busy = False
                    self._idle.discard(worker)
                    fin = worker.finish
                    if fin is not None and not fin.done():
                        fin.set_result(None)
                    return True
                worker.idle = True
                self._idle.add(worker)
        if job is None:
            return False
        self._begin(worker, job)
        return True

    def _begin(self, worker: _Worker, job: _Job) -> None:
        report = self._report
        uid = job.uid
        token = job.token
        job.began = began = time.time()
        report("running", uid, None, (began, None), token)
        try:
            coro = job.start()
        except BaseException as exc:  # noqa: BLE001 - the body's own error (bad arguments...)
            report("failed", uid, exc, (began, time.time()), token)
            self._drop(job)
            return
        if not asyncio.iscoroutine(coro):  # a callable object that returned a plain value
            report("done", uid, coro, (began, time.time()), token)
            self._drop(job)
            return
        loop = worker.loop
        task = loop.create_task(coro)
        job.loop, job.task = loop, task
        worker.running += 1
        task.add_done_callback(lambda t: self._ended(worker, job, t))

    def _ended(self, worker: _Worker, job: _Job, task: asyncio.Task) -> None:
        stamps = (job.began, time.time())
        worker.running -= 1
        uid, token = job.uid, job.token
        self._drop(job)
        if task.cancelled():
            self._report("cancelled", uid, None, None, token)
            return
        exc = task.exception()
        if exc is None:
            self._report("done", uid, task.result(), stamps, token)
        else:
            self._report("failed", uid, exc, stamps, token)


def _nothing() -> None:
    """Wakes a worker loop from select so that it looks at the queue."""
