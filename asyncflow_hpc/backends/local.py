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
import collections
import contextvars
import functools
import mmap
import os
import shlex
import signal
import socket
import tempfile
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from .._threads import ThreadCall
from ..descriptions import (
    check_commands,
    check_environment,
    check_number,
    check_path,
)
from ..errors import (
    ConfigurationError,
    ExecutableNotFoundError,
    MissingOutputError,
    TaskExecutionError,
    TaskTimeoutError,
)
from ..files import FilePlan, missing_outputs, stage_in
from ..hpc.launchers import mpi_launch_prefix, node_failure
from ..tasks import TaskKind, TaskSpec, TaskState
from ._process_pool import ProcessRunner
from ._reaper import Reaper
from ._worker_loops import Door, WorkerLoops
from .base import ExecutionBackend
from .radical.keys import TASK_FIELDS as PILOT_TASK_KEYS

__all__ = ["LocalExecutionBackend"]

_EXECUTABLE = TaskKind.EXECUTABLE
#: task_description keys with a meaning here
LOCAL_KEYS = frozenset({"cwd", "env", "environment", "sandbox", "pre_exec", "ranks", "stdin"})


def check_local_values(td: Mapping[str, Any], task: str = "") -> None:
    """The values of the keys that mean something here."""
    for key, value in td.items():
        if value is None:
            continue
        if key in ("ranks", "cores_per_rank"):
            check_number(key, value, task, integer=True, minimum=1)
        elif key in ("cwd", "sandbox"):
            check_path(key, value, task)
        elif key in ("env", "environment"):
            check_environment(key, value, task)
        elif key == "pre_exec":
            check_commands(key, value, task)


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
                   "cmd": "executable", "retry": "retries"}

    def check_task_description(self, td: Mapping[str, Any], task: str = "") -> None:
        super().check_task_description(td, task)
        check_local_values(td, task)

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
        self._limit: _Slots | None = None
        self._running: dict[str, asyncio.Future] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._host = socket.gethostname()
        self._spools = _SpoolPool()
        self._devnull = -1
        self._door: Door | None = None
        self._loops: WorkerLoops | None = None
        self._pool: ProcessRunner | None = None
        self._reaper: Reaper | None = None
        self._workers = getattr(self.executor, "_max_workers", None) or (os.cpu_count() or 1)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": type(self).__name__, "host": self._host,
                "executor": type(self.executor).__name__, "max_processes": self.max_processes}

    async def _start(self) -> None:
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        if self.max_processes:
            self._limit = _Slots(self.max_processes)

    def _worker_loops(self) -> WorkerLoops:
        if self._loops is None:
            self._door = Door(self.reporter.loop, self._from_worker)
            self._loops = WorkerLoops(self.executor, self._workers, self._report_from_worker)
        return self._loops

    def _process_runner(self) -> ProcessRunner:
        if self._pool is None:
            self._pool = ProcessRunner(self.executor, self.reporter.loop,  # type: ignore[arg-type]
                                       _run_pickled, self._from_pool)
        return self._pool

    def _from_pool(self, uid: str, ok: bool, value: Any) -> None:
        if not self._forget(uid):
            return  # cancelled or timed out by us: already reported
        if ok:
            self.reporter.done(uid, value)
        else:
            self.reporter.failed(uid, value)

    def _report_from_worker(self, kind: str, uid: str, value: Any) -> None:
        self._door.put((kind, uid, value))  # type: ignore[union-attr]

    def _from_worker(self, item: tuple[str, str, Any]) -> None:
        """On the loop: a worker loop's report about an ``async def`` body."""
        kind, uid, value = item
        if kind == "running":
            if uid in self._running:
                self.reporter.running(uid, self._host)
            return
        if not self._forget(uid):
            return  # cancelled or timed out by us: already reported
        if kind == "done":
            self.reporter.done(uid, value)
        elif kind == "failed":
            self.reporter.failed(uid, value)
        else:
            self.reporter.cancelled(uid)

    # ------------------------------------------------------------------ submit
    def submit(self, specs: Sequence[TaskSpec]) -> None:
        reporter = self.reporter
        loop = reporter.loop
        running = self._running
        for spec in specs:
            uid = spec.uid
            if spec.kind is _EXECUTABLE:
                fut: asyncio.Future = loop.create_task(self._run_executable(spec))
            elif spec.is_async and not self._processes and not spec.inline:
                loops = self._worker_loops()
                running[uid] = _Elsewhere(functools.partial(loops.cancel, uid))
                loops.submit(uid, functools.partial(_start_body, spec))
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
                    blob = _dumps(spec)
                except Exception as exc:
                    loop.call_soon(reporter.failed, uid, ConfigurationError(
                        f"task {spec.name!r} cannot be sent to a process pool: its function or "
                        f"arguments are not picklable ({type(exc).__name__}: {exc})"))
                    continue
                pool = self._process_runner()
                running[uid] = _Elsewhere(functools.partial(pool.give_up, uid))
                pool.submit(spec, blob)
                reporter.running(uid, self._host)
                if spec.timeout:
                    self._timers[uid] = loop.call_later(spec.timeout, self._timed_out, uid, spec)
                continue
            else:
                fut = loop.run_in_executor(self.executor, self._call_in_thread, uid, spec)
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

    def _forget(self, uid: str) -> bool:
        """Drop a finished task; False when cancel() or a timeout got there first."""
        if self._running.pop(uid, None) is None:
            return False
        if self._timers:
            timer = self._timers.pop(uid, None)
            if timer is not None:
                timer.cancel()
        return True

    def _call_in_thread(self, uid: str, spec: TaskSpec) -> Any:
        self.reporter.threadsafe(uid, TaskState.RUNNING, node=self._host)
        return _call_body(spec.function, spec.args, spec.kwargs, spec.files, spec.name)


    def _finished(self, uid: str, fut: asyncio.Future) -> None:
        if self._running.pop(uid, None) is not fut:
            return  # cancelled or timed out by us: already reported
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

    # ------------------------------------------------------------------ executables
    async def _run_executable(self, spec: TaskSpec) -> str:
        argv, cwd, env = _process_args(spec)
        if spec.files is not None:
            stage_in(spec.files)
            cwd = cwd or spec.files.task_dir
        if self._limit is None:
            return await self._spawn(spec, argv, cwd, env)
        # an MPI task of R ranks is R processes: it takes R slots (all of them at most)
        taken = await self._limit.acquire(int(spec.description.get("ranks") or 1))
        try:
            return await self._spawn(spec, argv, cwd, env)
        finally:
            self._limit.release(taken)

    async def _spawn(self, spec: TaskSpec, argv: list[str], cwd: str | None,
                     env: dict[str, str] | None) -> str:
        # stdout and stderr go to spool files, not pipes: the child writes straight to the
        # file, the loop reads nothing while it runs, and a 100 MB output is decoded once
        # from a memory map instead of being buffered, joined and copied. The files are
        # reused (truncated) from a pool because creating one costs more than a fork here.
        if spec.stdio is not None:  # capture_stdio=True: the task's own files
            out_f, err_f = _stdio_file(spec.stdio[0]), _stdio_file(spec.stdio[1])
            paths = {"stdout_path": spec.stdio[0], "stderr_path": spec.stdio[1]}
        else:
            out_f, err_f = self._spools.get(), self._spools.get()
            paths = {}
        try:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=self._devnull, stdout=out_f, stderr=err_f, cwd=cwd, env=env,
                    start_new_session=True)
            except FileNotFoundError:
                if cwd is not None and not os.path.isdir(cwd):
                    raise ConfigurationError(
                        f"working directory {cwd!r} of task {spec.name!r} does not exist") from None
                raise ExecutableNotFoundError(argv[0], spec.command_line) from None
            except PermissionError:
                raise ExecutableNotFoundError(argv[0], spec.command_line,
                                              "is not executable (permission denied)") from None
            self.reporter.running(spec.uid, self._host)
            reaper = self._reaper
            if reaper is None:
                reaper = self._reaper = Reaper(self.kill_grace)
            reaper.add(proc.pid)  # its group dies with the campaign, even after kill -9
            try:
                returncode = await proc.wait()
            except asyncio.CancelledError:
                await self._kill(proc)
                raise
            finally:
                reaper.remove(proc.pid)
            if returncode != 0:
                err_size = os.fstat(err_f.fileno()).st_size
                if err_size > STDERR_TAIL_BYTES and "stderr_path" not in paths:
                    # the error keeps the tail; the whole stderr goes to a private file
                    paths["stderr_path"] = _spill(err_f, err_size, 0, spec.name, ".stderr").path
                raise TaskExecutionError(spec.command_line, returncode,
                                         _read_text(err_f, tail=STDERR_TAIL_BYTES), task=spec.name,
                                         **paths)
            if os.fstat(err_f.fileno()).st_size:
                stderr = _read_text(err_f, tail=STDERR_TAIL_BYTES)
                lost = node_failure(stderr)
                if lost:
                    raise TaskExecutionError(
                        spec.command_line, returncode, stderr, task=spec.name,
                        details=f"srun lost node {lost} and exited 0; the output is incomplete",
                        **paths)
            if spec.files is not None:
                _check_outputs(spec.files, spec.name)
            if spec.stdio is not None:
                return spec.stdio[0]  # radical.asyncflow: the result is the stdout file's path
            size = os.fstat(out_f.fileno()).st_size
            if size > self.max_output:
                return _spill(out_f, size, self.max_output, spec.name)
            return _read_text(out_f)
        finally:
            if spec.stdio is not None:
                out_f.close()
                err_f.close()
            else:
                self._spools.put(out_f)
                self._spools.put(err_f)

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM the task's process group, SIGKILL what is left after the grace period."""
        pgid = proc.pid  # start_new_session: the child leads its own group
        _killpg(pgid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), self.kill_grace)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass
        _killpg(pgid, signal.SIGKILL)  # grandchildren that ignored SIGTERM or outlived the leader
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            pass

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
        self._spools.close()
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1
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
        if self._loops is not None:
            self._loops.close()
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None


def _shut(pool: Executor, manager: threading.Thread | None) -> None:
    pool.shutdown(wait=True)
    if manager is not None:
        manager.join()


def _terminate_workers(pools: list[Executor]) -> None:
    for pool in pools:
        for p in list((getattr(pool, "_processes", None) or {}).values()):
            if p.is_alive():
                p.terminate()


def _process_args(spec: TaskSpec) -> tuple[list[str], str | None, dict[str, str] | None]:
    """argv, cwd and environment of an executable task, from its spec and description."""
    desc = spec.description
    command = spec.command
    if spec.shell:
        argv = ["/bin/sh", "-c", command]  # type: ignore[list-item]
    else:
        argv = list(command)  # type: ignore[arg-type]
    cwd = env = None
    if desc:
        ranks = desc.get("ranks") or 1
        if ranks > 1:
            argv = mpi_launch_prefix(ranks, "mpirun", oversubscribe=True) + argv
        pre = desc.get("pre_exec")
        if pre:
            argv = ["/bin/sh", "-c", " && ".join([*pre, "exec " + shlex.join(argv)])]
        where = desc.get("cwd") or desc.get("sandbox")
        cwd = os.fspath(where) if where else None
        extra = desc.get("env") or desc.get("environment")
        if extra:
            env = dict(os.environ)
            env.update({k: str(v) for k, v in extra.items()})
    return argv, cwd, env


class _Slots:
    """A FIFO weighted semaphore: a task takes as many process slots as it starts processes.

    FIFO so that a wide MPI task is not starved by a stream of single-process tasks.
    """

    def __init__(self, total: int) -> None:
        self.total = self.free = total
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, want: int) -> int:
        want = max(1, min(want, self.total))
        if not self._waiters and self.free >= want:
            self.free -= want
            return want
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (want, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(want)  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove(entry)
                self._wake()
            raise
        return want

    def release(self, taken: int) -> None:
        self.free += taken
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.free >= self._waiters[0][0]:
            want, fut = self._waiters.popleft()
            if fut.done():
                continue
            self.free -= want
            fut.set_result(None)


class _SpoolPool:
    """Reusable unlinked temporary files for executables' stdout and stderr."""

    def __init__(self, keep: int = 64) -> None:
        self._free: list[Any] = []
        self._keep = keep

    def get(self) -> Any:
        return self._free.pop() if self._free else tempfile.TemporaryFile()

    def put(self, fh: Any) -> None:
        if len(self._free) >= self._keep or fh.closed:
            fh.close()
            return
        fd = fh.fileno()
        os.ftruncate(fd, 0)  # also frees the disk space of a large output at once
        os.lseek(fd, 0, os.SEEK_SET)
        self._free.append(fh)

    def close(self) -> None:
        for fh in self._free:
            fh.close()
        self._free.clear()


#: how much of a failed task's stderr is kept (its end: where the error is)
STDERR_TAIL_BYTES = 1 << 20


def _read_text(fh: Any, tail: int | None = None) -> str:
    """Decode a spooled output file; large ones straight from a memory map (one copy)."""
    fd = fh.fileno()
    size = os.fstat(fd).st_size
    start = max(0, size - tail) if tail else 0
    if size - start <= 0:
        return ""
    if size - start < (1 << 20):
        return os.pread(fd, size - start, start).decode(errors="replace")
    with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as mm, memoryview(mm) as view:
        return str(view[start:], "utf-8", "replace")


class SpilledOutput(str):
    """An executable's stdout larger than ``max_output``: the first ``max_output`` bytes as
    text, and the whole output in the file at ``.path`` (``.size`` bytes)."""

    path: str
    size: int


def _spill(fh: Any, size: int, keep: int, name: str, suffix: str = ".stdout") -> SpilledOutput:
    """Copy the whole output to a new private file (``mkstemp``: 0600, ``O_EXCL``); keep its
    first ``keep`` bytes in memory."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
    fd, path = tempfile.mkstemp(prefix=f"asyncflow-hpc-{safe}-", suffix=suffix)
    try:
        src, offset = fh.fileno(), 0
        while offset < size:
            sent = os.sendfile(fd, src, offset, size - offset)
            if sent == 0:
                break
            offset += sent
    finally:
        os.close(fd)
    head = os.pread(fh.fileno(), keep, 0).decode(errors="replace") if keep else ""
    out = SpilledOutput(head)
    out.path, out.size = path, size
    return out


def _stdio_file(path: str) -> Any:
    """A captured output file: created (or emptied) owner-only, never through a symlink."""
    from ..safe_files import safe_open

    return os.fdopen(safe_open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600), "w+b")


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _dumps(spec: TaskSpec) -> bytes:
    import cloudpickle

    return cloudpickle.dumps((spec.function, spec.args, spec.kwargs))


def _run_pickled(blob: bytes, plan: FilePlan | None = None) -> Any:
    """Runs in a worker process: unpack the function and call it."""
    import pickle

    func, args, kwargs = pickle.loads(blob)
    name = getattr(func, "__name__", "task")
    try:
        return _call_body(func, args, kwargs, plan, name)
    except BaseException as exc:  # noqa: BLE001 - sent back as itself when it survives pickling
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # noqa: BLE001 - would break the pool in the parent: send its text
            import traceback

            raise TaskBodyError(f"task {name!r} raised {type(exc).__name__}: {_text(exc)}\n"
                                + "".join(traceback.format_exception(exc))) from None
        raise


class TaskBodyError(RuntimeError):
    """A body's exception that could not be sent back from a worker process as itself."""


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001
        return "<unprintable>"


class _Elsewhere:
    """Stands in ``_running`` for a body run by a worker loop or the process pool: cancelling
    it asks that runner to drop or stop the body."""

    __slots__ = ("cancel",)

    def __init__(self, cancel: Any) -> None:
        self.cancel = cancel


def _start_body(spec: TaskSpec) -> Any:
    """On a worker loop: stage the task's files, then make its coroutine."""
    plan = spec.files
    if plan is not None:
        stage_in(plan)
    coro = spec.function(*spec.args, **spec.kwargs)  # type: ignore[misc]
    if not asyncio.iscoroutine(coro):
        return coro
    return _guarded(coro, plan, spec.name)


async def _guarded(coro: Any, plan: FilePlan | None = None, name: str = "") -> Any:
    """Run a body's coroutine; KeyboardInterrupt and SystemExit become the task's error (a
    worker loop must never be stopped by a body), and declared outputs are checked."""
    try:
        value = await coro
    except (KeyboardInterrupt, SystemExit) as exc:
        raise RuntimeError(f"task {name!r} raised {type(exc).__name__}") from exc
    if plan is not None:
        _check_outputs(plan, name)
    return value


def _check_outputs(plan: FilePlan, name: str) -> None:
    missing = missing_outputs(plan)
    if missing:
        raise MissingOutputError(name, missing, plan.task_dir)


_local = threading.local()


def _thread_loop() -> asyncio.AbstractEventLoop:
    """An event loop kept for this thread (or worker process) for ``async def`` bodies."""
    loop = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def _call_body(func: Any, args: tuple, kwargs: dict, plan: FilePlan | None, name: str) -> Any:
    """Call a task body in a worker thread or process, with its files staged and checked."""
    if plan is not None:
        stage_in(plan)
    try:
        result = func(*args, **kwargs)
        if asyncio.iscoroutine(result):  # an async def body, or a callable returning one
            result = _thread_loop().run_until_complete(_guarded(result, None, name))
    except StopIteration as exc:  # a future cannot carry it: the same error as a coroutine's
        raise RuntimeError(f"task body {name!r} raised StopIteration") from exc
    if plan is not None:
        _check_outputs(plan, name)
    return result
