"""Executable tasks of the local backend: each a subprocess in a session of its own, its stdout
and stderr in spool files, at most ``max_processes`` processes at once."""

from __future__ import annotations

import asyncio
import collections
import mmap
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError, ExecutableNotFoundError, TaskExecutionError
from ..files import stage_in
from ..hpc.launchers import mpi_launch_prefix, node_failure
from ..hpc.rank_output import RANK_DIR_PREFIX, make_ompi_session_dir, merge_rank_files, rank_wrapper
from ..safe_files import safe_open
from ..tasks import TaskSpec
from ._bodies import check_outputs
from ._reaper import Reaper

__all__ = ["ExecutableRunner", "SpilledOutput"]


class ExecutableRunner:
    """Runs executables for one backend; :meth:`close` once none runs any more."""

    def __init__(self, on_started: Callable[[str], None], *, max_processes: int,
                 kill_grace: float, max_output: int) -> None:
        self._on_started = on_started  # called with the task's uid once its process exists
        self.kill_grace = kill_grace
        self.max_output = max_output
        self._limit = _Slots(max_processes) if max_processes else None
        self._spools = _SpoolPool()
        self._devnull = os.open(os.devnull, os.O_RDONLY)
        self._reaper: Reaper | None = None

    async def run(self, spec: TaskSpec) -> str:
        ranks = int((spec.description or {}).get("ranks") or 1)
        # an MPI task's ranks write to files of their own, merged line by line when it ends
        rank_dir = tempfile.mkdtemp(prefix=RANK_DIR_PREFIX) if ranks > 1 else None
        try:
            argv, cwd, env = _process_args(spec, rank_dir)
            if spec.files is not None:
                stage_in(spec.files)
                cwd = cwd or spec.files.task_dir
            if self._limit is None:
                return await self._spawn(spec, argv, cwd, env, rank_dir)
            # an MPI task of R ranks is R processes: it takes R slots (all of them at most)
            taken = await self._limit.acquire(ranks)
            try:
                return await self._spawn(spec, argv, cwd, env, rank_dir)
            finally:
                self._limit.release(taken)
        finally:
            if rank_dir is not None:
                shutil.rmtree(rank_dir, ignore_errors=True)

    async def _spawn(self, spec: TaskSpec, argv: list[str], cwd: str | None,
                     env: dict[str, str] | None, rank_dir: str | None = None) -> str:
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
            self._on_started(spec.uid)
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
            if rank_dir is not None:  # the ranks' lines, tagged, after the launcher's own
                await _merge_ranks(rank_dir, out_f.fileno(), err_f.fileno())
            if spec.stdio is None and spec.description:
                _copy_to_named_files(spec, cwd, out_f, err_f)
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
                check_outputs(spec.files, spec.name)
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

    def close(self) -> None:
        self._spools.close()
        if self._devnull >= 0:
            os.close(self._devnull)
            self._devnull = -1
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None


def _process_args(spec: TaskSpec, rank_dir: str | None = None
                  ) -> tuple[list[str], str | None, dict[str, str] | None]:
    """argv, cwd and environment of an executable task, from its spec and description;
    ``rank_dir``: where the ranks of an MPI task write their output."""
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
            make_ompi_session_dir({**os.environ, **(desc.get("env") or desc.get("environment")
                                                    or {})})
            launch = mpi_launch_prefix(ranks, "mpirun", oversubscribe=True)
            argv = launch + (rank_wrapper(rank_dir) if rank_dir else []) + argv
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


#: rank output up to this size is merged on the event loop (~1 GB/s), more in a thread
MERGE_INLINE_BYTES = 8 << 20


async def _merge_ranks(rank_dir: str, out_fd: int, err_fd: int) -> None:
    """Append the ranks' files, tagged, to the task's stdout and stderr files."""
    size = sum(e.stat().st_size for e in os.scandir(rank_dir) if e.is_file())
    if size <= MERGE_INLINE_BYTES:
        merge_rank_files(rank_dir, out_fd, err_fd)
        return
    done = asyncio.ensure_future(asyncio.to_thread(merge_rank_files, rank_dir, out_fd, err_fd))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        await asyncio.wait([done])  # it writes into our spool files: let it finish first
        raise


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


def _copy_to_named_files(spec: TaskSpec, cwd: str | None, out_f: Any, err_f: Any) -> None:
    """``task_description["stdout"]`` / ``["stderr"]``: the task's output also in those files
    (relative to the task's working directory), as RADICAL-Pilot writes them in its sandbox;
    the result stays the output itself."""
    for key, spool in (("stdout", out_f), ("stderr", err_f)):
        name = spec.description.get(key)
        if not name:
            continue
        path = os.path.join(cwd or os.getcwd(), os.fspath(name))
        try:
            fd = safe_open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, make_dirs=True)
        except OSError as exc:
            raise ConfigurationError(f"task {spec.name!r}: cannot write task_description"
                                     f"[{key!r}] {path!r}: {exc.strerror or exc}") from None
        try:
            src, size, done = spool.fileno(), os.fstat(spool.fileno()).st_size, 0
            while done < size:  # in the kernel; the spool's own offset is left alone
                done += os.sendfile(fd, src, done, size - done)
        finally:
            os.close(fd)
