"""Executables die with the campaign, even after ``kill -9``.

Each executable runs in its own session (so that cancelling it can kill its whole process
group), which also means nothing ends it when the campaign is killed outright: a resumed run
would then start duplicates beside it. :class:`Reaper` is one small helper process per
backend, fed the process-group ids of running executables through a pipe (a few bytes per
task). When the campaign dies, however it dies, the pipe's write end closes; the reaper then
sends SIGTERM, and after a grace period SIGKILL, to every group still registered.

(``PR_SET_PDEATHSIG`` on each child would need ``preexec_fn`` or a wrapper exec per task:
1.2–1.9 ms more per executable here, against microseconds for a pipe write.)
"""

from __future__ import annotations

import os
import subprocess
import sys

__all__ = ["Reaper"]

_CODE = r"""
import os, signal, sys, time
groups = set()
buf = b""
while True:
    try:
        data = os.read(0, 65536)
    except InterruptedError:
        continue
    if not data:
        break
    buf += data
    *lines, buf = buf.split(b"\n")
    for line in lines:
        if line[:1] == b"+":
            groups.add(int(line[1:]))
        elif line[:1] == b"-":
            groups.discard(int(line[1:]))
        elif line == b"q":
            sys.exit(0)
def signal_all(sig):
    for g in list(groups):
        try:
            os.killpg(g, sig)
        except (ProcessLookupError, PermissionError):
            groups.discard(g)
if groups:
    signal_all(signal.SIGTERM)
    time.sleep(float(sys.argv[1]))
    signal_all(signal.SIGKILL)
"""


class Reaper:
    """The helper process; ``add``/``remove`` register process groups (see module doc)."""

    def __init__(self, grace: float = 2.0) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _CODE, str(grace)], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        self._fd = self._proc.stdin.fileno()  # type: ignore[union-attr]
        self.pid = self._proc.pid

    def add(self, pgid: int) -> None:
        self._write(b"+%d\n" % pgid)

    def remove(self, pgid: int) -> None:
        self._write(b"-%d\n" % pgid)

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError:  # the reaper is gone: nothing to protect any more
            pass

    def close(self) -> None:
        """Stop the reaper without killing anything (the backend ended its own processes)."""
        self._write(b"q\n")
        try:
            self._proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
