"""The telemetry worker process: turns event batches into JSONL lines and writes them.

Started by :class:`asyncflow_hpc.telemetry.session.TelemetrySession` as
``python -I -S worker.py LOG_FD PARENT_PID`` (no site: a faster start) with a pipe on stdin,
in a session of its own (so the
terminal's Ctrl-C or a signal to the parent's process group does not cut the log short). It
imports only the standard library and its sibling modules ``fastlog``, ``spans`` and
``metrics`` — never the package itself. Resource samples are taken in the parent (by the
thread that feeds the pipe) and arrive as lines.

On the pipe: frames of a 4-byte big-endian length and a :mod:`marshal` payload, a tuple whose
first item says what it is:

* ``("I", options)``: the first frame (session id, trace and span ids, sampling interval);
* ``("T", text)``: lines written as they are (the session's own events);
* ``("S", text, sample)``: a ResourceUpdate line, and its figures for the metric lines;
* ``("L", emit, items)``: what the engine's tape held at ``emit``: batches of rows and
  events with an error, in order (see :mod:`fastlog`);
* ``("F", now, text)``: the end: unfinished spans, workflow spans, a last metric snapshot,
  then ``text`` (SessionEnded and the session span).

Every frame's lines go to the log in one ``write`` (O_APPEND, whole lines). The worker exits
when the pipe is closed — at the parent's shutdown, or when the parent dies (SIGKILL
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastlog  # type: ignore[import-not-found]  # noqa: E402
from metrics import Metrics  # type: ignore[import-not-found]  # noqa: E402

_HEADER = 4


class Worker:
    def __init__(self, log_fd: int, parent_pid: int) -> None:
        self.fd = log_fd
        self.parent_pid = parent_pid
        self.translator: fastlog.BatchTranslator | None = None
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
            self.translator = fastlog.BatchTranslator(
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
        buf = bytearray()
        eof = False
        while not eof:
            ready, _, _ = select.select([rfd], [], [], 1.0)
            if ready:
                chunk = os.read(rfd, 1 << 20)
                if chunk:
                    buf += chunk
                else:
                    eof = True
            elif os.getppid() != self.parent_pid:
                # the parent is gone but someone still holds the pipe: take what is there
                os.set_blocking(rfd, False)
                try:
                    while True:
                        chunk = os.read(rfd, 1 << 20)
                        if not chunk:
                            break
                        buf += chunk
                except OSError:
                    pass
                eof = True
            out: list = []
            pos = 0
            while len(buf) - pos >= _HEADER:
                size = int.from_bytes(buf[pos:pos + _HEADER], "big")
                if len(buf) - pos - _HEADER < size:
                    break
                try:
                    self.handle(marshal.loads(bytes(buf[pos + _HEADER:pos + _HEADER + size])), out)
                except Exception as exc:  # a bug must not lose the rest of the log
                    os.write(2, f"asyncflow-hpc: telemetry worker: {exc!r}\n".encode())
                pos += _HEADER + size
            if pos:
                del buf[:pos]
            if out:
                # the translator's lines are bytes already; the rest is text
                self.write(b"".join(x if isinstance(x, bytes)
                                    else x.encode("utf-8", "backslashreplace") for x in out))
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
