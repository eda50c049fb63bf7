"""The telemetry log file, and the worker process that writes it.

:func:`open_log` opens the log (private to the user, appended to by every engine of one
run). :class:`WorkerProcess` starts the telemetry worker (:mod:`.worker`) on it and feeds it
messages through a pipe, written by the event loop's thread without blocking. Where there is
no worker process, :class:`.thread_worker.ThreadWorker` runs the same worker on a thread.
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..framing import frame
from .rows import sanitize

__all__ = ["WorkerProcess", "WorkerUnavailable", "open_log"]

log = logging.getLogger("asyncflow_hpc.telemetry")

# files this process has opened: a second engine in the same run appends, a new run truncates
_opened_here: set[str] = set()
_opened_lock = threading.Lock()


def open_log(path: str) -> int:
    """Open ``path`` for appending, private to the user; truncate it unless this process
    already writes there (several engines in one script share one log).

    Opened with :func:`asyncflow_hpc.safe_files.safe_open`: a symbolic link, another user's
    file or a folder others may write to is refused (``UnsafePathError``); missing folders
    are created 0700.
    """
    from ..safe_files import safe_open

    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    # the folder resolved, the file itself not (a link there is refused, never followed)
    real = os.path.join(os.path.realpath(parent), name)
    with _opened_lock:
        fresh = real not in _opened_here
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    if fresh:
        flags |= os.O_TRUNC
    fd = safe_open(absolute, flags, 0o600, make_dirs=True)
    with _opened_lock:
        _opened_here.add(real)
    return fd


def _dumps(msg: tuple) -> bytes:
    try:
        return marshal.dumps(msg, 2)  # no back-references: half the time of version 4
    except ValueError:  # a value marshal cannot carry (an odd workflow id, say)
        if msg[0] != "L":
            raise
        return marshal.dumps((msg[0], msg[1], [sanitize(item) for item in msg[2]]), 2)


class WorkerUnavailable(RuntimeError):
    """The worker process could not be started (the caller writes in process instead)."""


# glibc: the worker makes a few MB of text per batch; keep that memory instead of returning
# it to the system and faulting it in again for the next batch (about half its page faults)
_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(256 << 20)}
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
_workers: weakref.WeakSet = weakref.WeakSet()


class WorkerProcess:
    """The telemetry worker process writing ``path``, fed through a pipe.

    The parent opens the file (so an unwritable path fails here, with the usual mode and
    truncation rules) and hands the descriptor to the worker. Frames are written to the pipe
    by the event loop's thread itself, non-blocking (the pipe is enlarged to 1 MiB where the
    system allows): a thread handing them over would contend for the GIL with the loop, and
    on a busy machine every hand-over of the GIL waits for the scheduler. What does not fit
    waits for the loop to report the pipe writable, so a slow worker never blocks the loop.
    Resource samples are taken by a thread of their own, once per interval.
    """

    def __init__(self, path: str, init: dict, *, sample: Callable[[], tuple] | None = None,
                 interval: float | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        self.path = path
        fd = open_log(path)
        try:
            rfd, wfd = os.pipe()
            try:
                if not sys.executable or os.name != "posix":
                    raise WorkerUnavailable("no Python interpreter to start (or not POSIX)")
                # -I -S: no site, a faster start (the worker needs the standard library only)
                self.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", WORKER, str(fd), str(os.getpid())], stdin=rfd,
                    # stdout: never written; its end (EOF) says the worker has exited
                    stdout=subprocess.PIPE, pass_fds=(fd,), close_fds=True,
                    start_new_session=True, env={**_MALLOC, **os.environ})
            except BaseException as exc:
                os.close(wfd)
                if isinstance(exc, Exception) and not isinstance(exc, WorkerUnavailable):
                    raise WorkerUnavailable(str(exc)) from exc
                raise
            finally:
                os.close(rfd)
        finally:
            os.close(fd)
        try:
            import fcntl

            fcntl.fcntl(wfd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except (ImportError, OSError):
            pass
        os.set_blocking(wfd, False)
        self._fd = wfd
        self._pending = bytearray()
        self._loop: Any = None
        self._watching = False
        self._failed = False
        self._forked = False
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None
        if sample is not None and interval and interval > 0:
            self._sampler = threading.Thread(
                target=self._sample_loop, args=(sample, interval, on_start),
                name="asyncflow-hpc-telemetry-sampler", daemon=True)
        _workers.add(self)
        self.send(("I", init))

    def start(self, loop: Any) -> None:
        """Attach to the running loop (pipe-writable callbacks) and start sampling."""
        self._loop = loop
        if self._sampler is not None:
            self._sampler.start()

    # ------------------------------------------------------------------ the pipe
    def send(self, msg: tuple) -> None:
        """Write one frame (a marshal-able tuple), or keep it until the pipe has room.
        On the loop's thread (or at exit, when no loop runs)."""
        if self._fd < 0 or self._failed:
            return
        data = frame(msg, _dumps)
        if self._pending:
            self._pending += data
            return
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            self._fail(exc)
            return
        if n < len(data):
            self._pending += memoryview(data)[n:]
            self._watch()

    def _watch(self) -> None:
        loop = self._loop
        if self._watching or loop is None or loop.is_closed():
            return
        try:
            loop.add_writer(self._fd, self._writable)
            self._watching = True
        except RuntimeError:  # not on the loop's thread / loop gone: flushed at close
            pass

    def _writable(self) -> None:
        try:
            n = os.write(self._fd, self._pending)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(exc)
            n = len(self._pending)
        del self._pending[:n]
        if not self._pending:
            self._unwatch()

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            try:
                self._loop.remove_writer(self._fd)
            except Exception:
                pass

    def _fail(self, exc: OSError) -> None:
        if not self._failed:
            self._failed = True
            self._pending.clear()
            log.warning("asyncflow-hpc: cannot hand telemetry to its worker (%s): %s",
                        self.path, exc)

    # ------------------------------------------------------------------ samples
    def _sample_loop(self, sample: Callable[[], tuple], interval: float,
                     on_start: Callable[[], None] | None) -> None:
        if on_start is not None:
            try:
                on_start()
            except Exception:
                log.debug("telemetry sampler start hook failed", exc_info=True)
        last = False
        while not last:
            last = self._stop.wait(interval)  # set: one last sample, then stop
            try:
                msg = sample()
                self._loop.call_soon_threadsafe(self.send, msg)
            except RuntimeError:  # the loop is closed
                return
            except Exception:
                log.debug("telemetry sample failed", exc_info=True)

    def stop_sampling(self, timeout: float = 2.0) -> None:
        """Take a last sample and stop the sampler (blocking: call it in an executor; the
        sample is handed over through the loop)."""
        if self._sampler is not None and self._sampler.is_alive():
            self._stop.set()
            self._sampler.join(timeout)

    # ------------------------------------------------------------------ the end
    def detach(self) -> None:
        """Stop using the loop (on its thread): what is pending is written by close()."""
        self._unwatch()
        self._loop = None

    def close(self, timeout: float = 60.0) -> None:
        """Write what is pending, close the pipe and wait for the worker to finish the log.
        Blocking (after :meth:`detach`); idempotent."""
        if self._forked:
            return
        self._stop.set()
        self._unwatch()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                if self._pending and not self._failed:
                    os.set_blocking(fd, True)
                    view = memoryview(self._pending)
                    while view:
                        view = view[os.write(fd, view):]
                    view.release()
            except OSError as exc:
                self._fail(exc)
            finally:
                self._pending.clear()
                os.close(fd)  # the pipe's end: the worker writes the rest and exits
        try:
            # Popen.wait(timeout) polls with growing sleeps (up to 50 ms late); the pipe's
            # end wakes this thread the moment the worker exits
            deadline = time.monotonic() + timeout
            select.select([self.proc.stdout], [], [], timeout)
            code = self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("asyncflow-hpc: the telemetry worker did not finish within %.0f s",
                        timeout)
            self.proc.kill()
            code = self.proc.wait()
        finally:
            self.proc.stdout.close()
        if code:
            log.warning("asyncflow-hpc: the telemetry worker writing %s exited with status %s",
                        self.path, code)

    def _after_fork(self) -> None:
        # a forked child must not hold the pipe open (the worker waits for its end)
        self._forked = True
        self._stop.set()
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1


def _after_fork_in_child() -> None:
    for worker in list(_workers):
        worker._after_fork()
    _workers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
