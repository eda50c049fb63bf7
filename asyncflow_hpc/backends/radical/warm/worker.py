"""A warm worker: one persistent process that runs function tasks one after another.

Started by the pool agent (``python -m ...warm.worker``) with two pipes. It says ``("ready",
pid)`` once imported, then reads
``(tid, fid, fblob | None, argblob)`` frames, calls the function and writes
``(tid, status, payload, t0, t1)`` back (see :mod:`.protocol`). Functions arrive pickled once
per worker (``fblob``) and are kept by ``fid``; ``async def`` bodies run on one event loop
kept for the worker's life. The pipes are moved off fds 0 and 1 first, so a body that
prints writes to the worker's stderr (the pool agent's log in the pilot sandbox), never
into the protocol. The worker dies with its agent (``PR_SET_PDEATHSIG`` on Linux).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
import time
import traceback
from typing import Any

from ....framing import frame, read_frame
from ..._process_pool import die_with_parent
from .protocol import ERR, OK


def _dumps(obj: Any) -> bytes:
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - closures, lambdas, classes of __main__
        import cloudpickle

        return cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def _error_payload(exc: BaseException) -> tuple[bytes | None, str, str]:
    tb = "".join(traceback.format_exception(exc))
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001
        text = f"{type(exc).__name__}: <unprintable>"
    try:
        blob: bytes | None = _dumps(exc)
        pickle.loads(blob)  # must come back as itself in the campaign, or as text
    except Exception:  # noqa: BLE001
        blob = None
    return blob, text, tb


class Runner:
    """Runs one call at a time; keeps functions and an event loop between calls."""

    def __init__(self) -> None:
        self.functions: dict[int, Any] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def run(self, fid: int, fblob: bytes | None, argblob: bytes) -> tuple[str, Any, float, float]:
        t0 = time.time()
        try:
            if fblob is not None:
                self.functions[fid] = pickle.loads(fblob)
            func = self.functions[fid]
            args, kwargs = pickle.loads(argblob)
            t0 = time.time()  # the body starts now
            value = func(*args, **kwargs)
            if asyncio.iscoroutine(value):
                if self.loop is None:
                    self.loop = asyncio.new_event_loop()
                value = self.loop.run_until_complete(value)
            t1 = time.time()
        except BaseException as exc:  # noqa: BLE001 - everything goes back to the campaign
            t1 = time.time()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                exc = RuntimeError(f"task body raised {type(exc).__name__}: {exc}")
            return ERR, _error_payload(exc), t0, t1
        try:
            return OK, _dumps(value), t0, t1
        except Exception as exc:  # noqa: BLE001
            err = TypeError(f"the task's result ({type(value).__name__}) cannot be pickled "
                            f"to travel back: {exc}")
            return ERR, _error_payload(err), t0, t1


def main() -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the agent decides when we stop
    fin = os.fdopen(os.dup(0), "rb", buffering=0)
    fout = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # prints go to stderr
    sys.stdout = sys.stderr
    runner = Runner()
    fout.write(frame(("ready", os.getpid())))
    while True:
        try:
            tid, fid, fblob, argblob = read_frame(fin.read)
        except EOFError:
            return
        status, payload, t0, t1 = runner.run(fid, fblob, argblob)
        fout.write(frame((tid, status, payload, t0, t1)))


if __name__ == "__main__":
    main()
