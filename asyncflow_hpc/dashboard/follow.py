"""Reading a telemetry log while another process still writes it (``tail -F`` for JSONL).

:class:`LogFollower` reads what was appended since the last call, hands over whole lines
only (a line being written is kept until its newline arrives), waits for a file that does
not exist yet, and starts over when the file was replaced or truncated (a new run at the
same path). Reads are bounded per call, so a huge finished log is taken in slices and the
page answers meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable

__all__ = ["LogFollower"]

CHUNK = 4 << 20  # bytes read per call at most


class LogFollower:
    """Feeds the lines of ``path`` to ``on_line``, a call of :meth:`poll` at a time."""

    def __init__(self, path: str | os.PathLike[str], on_line: Callable[[str], None],
                 on_reset: Callable[[], None] | None = None) -> None:
        self.path = os.fspath(path)
        self.on_line = on_line
        self.on_reset = on_reset
        self.offset = 0
        self._ident: tuple[int, int] | None = None
        self._partial = b""

    def poll(self) -> int:
        """Read what is new (up to :data:`CHUNK` bytes); the number of lines handed over.
        Returns -1 while the file does not exist."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return -1
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            if ident != self._ident or st.st_size < self.offset:  # replaced or truncated
                if self._ident is not None and self.on_reset is not None:
                    self.on_reset()
                self._ident, self.offset, self._partial = ident, 0, b""
            if st.st_size == self.offset:
                return 0
            data = os.pread(fd, min(CHUNK, st.st_size - self.offset), self.offset)
        finally:
            os.close(fd)
        self.offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        n = 0
        for raw in data[:cut].split(b"\n")[:-1]:
            self.on_line(raw.decode("utf-8", "replace"))
            n += 1
        return n

    @property
    def behind(self) -> bool:
        """True when the last poll did not reach the end of the file."""
        try:
            return os.stat(self.path).st_size > self.offset
        except OSError:
            return False
