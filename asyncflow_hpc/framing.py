"""Length-prefixed frames: the one wire format between this package's processes.

A frame is a 4-byte big-endian length and a payload. The codec is the caller's: the
RADICAL-Pilot client process sends pickles (task specs, exceptions), the telemetry worker
receives :mod:`marshal` tuples (no class lookups, the fastest to decode). Both ends split the
byte stream with :class:`FrameReader`, fed with whatever ``recv``/``read`` returned.

Standard library only, and no import from the package: the telemetry worker runs with
``python -I -S`` and loads this file by path.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any

__all__ = ["HEADER", "FrameReader", "frame", "frame_bytes", "read_frame", "read_stream_frame"]

HEADER = struct.Struct(">I")
#: largest payload accepted (a corrupt length must not make the reader wait for 4 GiB)
MAX_FRAME = 1 << 31


def frame_bytes(payload: bytes) -> bytes:
    """``payload`` with its length in front."""
    return HEADER.pack(len(payload)) + payload


def frame(obj: Any, dumps: Callable[[Any], bytes] | None = None) -> bytes:
    """``obj`` encoded (a pickle unless ``dumps`` is given) and framed."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) if dumps is None else dumps(obj)
    return HEADER.pack(len(data)) + data


class FrameReader:
    """Splits a byte stream into decoded frames.

    ``loads`` decodes one payload (``pickle.loads`` unless given). A payload that fails to
    decode raises, unless ``on_error`` is given: then it is called with the exception and
    only that frame is lost.
    """

    def __init__(self, loads: Callable[[Any], Any] | None = None,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._buf = bytearray()
        self._loads = pickle.loads if loads is None else loads
        self._on_error = on_error

    def feed(self, data: bytes) -> list[Any]:
        """Add ``data``; return the frames it completed, decoded, in order."""
        buf = self._buf
        buf += data
        out = []
        pos = 0
        size_of = HEADER.size
        while len(buf) - pos >= size_of:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes: the stream is corrupt")
            end = pos + size_of + size
            if len(buf) < end:
                break
            payload = memoryview(buf)[pos + size_of:end]
            try:
                out.append(self._loads(payload))
            except Exception as exc:
                if self._on_error is None:
                    raise
                self._on_error(exc)
            finally:
                payload.release()
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes received that do not form a whole frame yet."""
        return len(self._buf)


def read_frame(recv: Callable[[int], bytes], loads: Callable[[Any], Any] | None = None) -> Any:
    """One frame from a blocking ``recv(n)``; ``EOFError`` if the stream ends first."""

    def exactly(n: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            chunk = recv(n - len(chunks))
            if not chunk:
                raise EOFError("the stream ended inside a frame")
            chunks += chunk
        return bytes(chunks)

    (size,) = HEADER.unpack(exactly(HEADER.size))
    return (pickle.loads if loads is None else loads)(exactly(size))


async def read_stream_frame(reader: Any) -> Any:
    """One pickled frame from an ``asyncio.StreamReader``; ``IncompleteReadError`` at the end."""
    (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
    return pickle.loads(await reader.readexactly(size))
