"""The telemetry worker: turns items from the engine's tape into JSONL lines and writes them.

As a process (the default), started by :class:`.writer.WorkerProcess` as
``python -I -S worker.py LOG_FD PARENT_PID`` (no site: a faster start) with a pipe on stdin,
in a session of its own (so the terminal's Ctrl-C or a signal to the parent's process group
does not cut the log short). It then imports only the standard library and its sibling
modules by path (``translator`` and what it needs, ``metrics``, and the package's
``framing``) — never the package itself. Resource samples are taken in the parent (by the
thread that feeds the pipe) and arrive as lines. Without a process, :class:`Worker` runs on
a thread of the campaign's process instead (:class:`.thread_worker.ThreadWorker`).

Messages (on the pipe: :mod:`asyncflow_hpc.framing` frames of :mod:`marshal` payloads) are
tuples whose first item says what they are:

* ``("I", options)``: the first (session id, trace and span ids, sampling interval);
* ``("T", text)``: lines written as they are (the session's own events);
* ``("S", text, sample)``: a ResourceUpdate line, and its figures for the metric lines;
* ``("L", emit, items)``: what the engine's tape held at ``emit``: batches of rows and
  events with an error, in order (see :mod:`.rows`);
* ``("F", now, text)``: the end: unfinished spans, workflow spans, a last metric snapshot,
  then ``text`` (SessionEnded and the session span).

Every message's lines go to the log in one ``write`` (O_APPEND, whole lines). The process
exits when the pipe is closed — at the parent's shutdown, or when the parent dies (SIGKILL
included): it writes what it has received first, so the log is complete up to the parent's
last hand-over, and it never outlives the parent for long (it also checks that the parent is
still there once a second, in case a forked child of the parent holds the pipe open).
"""

from __future__ import annotations

import _signal  # the C module: ``signal`` imports enum, a slower start
import marshal
import os
import select
import sys
import time

if __package__:
    from ..framing import FrameReader
    from .metrics import Metrics
    from .translator import Translator
else:  # a process of its own: the siblings by path, not the package
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [_here, os.path.dirname(_here)]
    from framing import FrameReader  # type: ignore[import-not-found,no-redef]
    from metrics import Metrics  # type: ignore[import-not-found,no-redef]
    from translator import Translator  # type: ignore[import-not-found,no-redef]

__all__ = ["Worker"]


class Worker:
    """Messages in, lines out to ``log_fd`` (see the module docstring)."""

    def __init__(self, log_fd: int, parent_pid: int) -> None:
        self.fd = log_fd
        self.parent_pid = parent_pid
        self.translator: Translator | None = None
        self.metrics: Metrics | None = None
        self.metric_interval = 5.0
        self.last_metric = time.time()
        self.finished = False
        self.failed = False

    # ------------------------------------------------------------------ output
    def write(self, text: str | bytes) -> None:
        if not text or self.failed:
            return
        if isinstance(text, str):
            text = text.encode("utf-8", "backslashreplace")
        view = memoryview(text)
        try:
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as exc:
            self.failed = True
            os.write(2, f"asyncflow-hpc: cannot write telemetry: {exc}\n".encode())

    # ------------------------------------------------------------------ frames
    def handle(self, msg: tuple, out: list) -> None:
        kind = msg[0]
        if kind == "L":
            if self.translator is not None:
                feed, emit = self.translator.feed, msg[1]
                for item in msg[2]:
                    feed(item, emit)
                self.translator.lines(out)
                now = time.time()
                if now - self.last_metric >= self.metric_interval:
                    self.last_metric = now
                    out.append(self.metrics.line(now))  # type: ignore[union-attr]
        elif kind == "T":
            out.append(msg[1])
        elif kind == "S":  # a resource sample: its line, and the figures for the metrics
            out.append(msg[1])
            if self.metrics is not None:
                self.metrics.node = msg[2]
        elif kind == "I":
            opts = msg[1]
            self.metrics = Metrics(opts["session_id"])
            self.translator = Translator(
                opts["session_id"], opts["trace_hex"], opts["span_hex"], self.metrics)
            interval = float(opts.get("interval") or 0.0)
            self.metric_interval = interval if interval > 0 else 5.0
        elif kind == "F":
            now, text = msg[1], msg[2]
            if self.translator is not None:
                self.translator.finish(now, out)
                out.append(self.metrics.line(now))  # type: ignore[union-attr]
            out.append(text)
            self.finished = True

    # ------------------------------------------------------------------ main loop
    def run(self, rfd: int) -> None:
        """The process: read frames from ``rfd`` until its end (or the parent's)."""
        frames = FrameReader(marshal.loads, on_error=self._bad_frame)
        eof = False
        while not eof:
            chunk = b""
            ready, _, _ = select.select([rfd], [], [], 1.0)
            if ready:
                chunk = os.read(rfd, 1 << 20)
                eof = not chunk
            elif os.getppid() != self.parent_pid:
                # the parent is gone but someone still holds the pipe: take what is there
                chunk = self._drain(rfd)
                eof = True
            out: list = []
            for msg in frames.feed(chunk):
                self.handle(msg, out)
            self.flush(out)
        self.end()

    @staticmethod
    def _drain(rfd: int) -> bytes:
        os.set_blocking(rfd, False)
        data = bytearray()
        try:
            while True:
                chunk = os.read(rfd, 1 << 20)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        return bytes(data)

    @staticmethod
    def _bad_frame(exc: BaseException) -> None:  # a bug must not lose the rest of the log
        os.write(2, f"asyncflow-hpc: telemetry worker: {exc!r}\n".encode())

    def flush(self, out: list) -> bytes:
        """Write the lines ``handle`` made (the translator's are bytes already, the rest
        text) in one write; returns them."""
        if not out:
            return b""
        data = b"".join(x if isinstance(x, bytes) else x.encode("utf-8", "backslashreplace")
                        for x in out)
        self.write(data)
        return data

    def end(self) -> None:
        """No more messages."""
        if not self.finished and self.metrics is not None:
            # the parent died without a shutdown: a last snapshot of what was seen
            self.write(self.metrics.line(time.time()))


NICE = 5  # the workflow's own processes come first when the CPUs are all busy


def main(argv: list[str]) -> None:
    for sig in (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP):
        _signal.signal(sig, _signal.SIG_IGN)  # the pipe's end is what stops us
    try:
        # on a busy node the log may lag (the parent keeps what the pipe cannot take), the
        # engine and the tasks should not
        os.nice(NICE)
    except OSError:
        pass
    log_fd, parent_pid = int(argv[1]), int(argv[2])
    Worker(log_fd, parent_pid).run(sys.stdin.fileno())
    os.close(log_fd)
    # everything is written (os.write, unbuffered): skip the interpreter's teardown, which
    # frees every object one by one and would keep the engine's shutdown waiting
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
