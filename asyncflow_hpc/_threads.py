"""Blocking calls off the event loop on threads of our own, joined when done.

``loop.run_in_executor(None, ...)`` and ``asyncio.to_thread`` start the loop's default
executor, whose threads outlive the engine; after ``await flow.shutdown()`` no thread that
asyncflow-hpc started may still be alive. :class:`ThreadCall` runs one call on a fresh thread,
is awaited without polling (the thread wakes the loop once), and joins the thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ThreadCall", "in_thread"]


class ThreadCall:
    """``fn(*args)`` on a thread of its own; see the module docstring."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "asyncflow-hpc-call"):
        loop = asyncio.get_running_loop()
        self._done: asyncio.Future = loop.create_future()

        def run() -> None:
            try:
                outcome = (True, fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, self._done, outcome)
            except RuntimeError:  # the loop is closed: nobody waits
                pass

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    async def wait(self, timeout: float | None = None) -> bool:
        """True once the call has returned (or raised) within ``timeout``; joins the thread."""
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except asyncio.TimeoutError:
            return False
        self._thread.join()
        return True

    async def result(self) -> Any:
        await self.wait()
        return self._done.result()


def _settle(fut: asyncio.Future, outcome: tuple[bool, Any]) -> None:
    if fut.done():
        return
    ok, value = outcome
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``await in_thread(fn, *args)``: the call's result, on a thread joined afterwards."""
    return await ThreadCall(fn, *args).result()
