"""Helpers shared by the RADICAL-Pilot tests (a uniquely named module: tests/core has a
``conftest`` of its own, so ``from conftest import ...`` would be ambiguous)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

#: pilot size for the shared pilot: raptor master + worker hold 2 cores, executables get the rest
PILOT = {"resource": "local.localhost", "cores": 4, "runtime": 45}
#: OpenMPI refuses to run as root unless told twice; RP applies ``environment`` only inside
#: the ranks, so the variables go into ``pre_launch`` (run before mpiexec)
MPI_AS_ROOT = ["export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"]


def refuse_network_tools() -> None:
    """RP's bootstrap pings a public address when `ping`/`dig` exist: never start a pilot then."""
    found = [tool for tool in ("ping", "dig") if shutil.which(tool)]
    if found:
        pytest.fail(f"{' and '.join(found)} found on PATH: RADICAL-Pilot's bootstrap would send "
                    "traffic to public addresses; uninstall them before running these tests",
                    pytrace=False)


def run(coro, timeout: float = 120):
    """Run a coroutine in a fresh loop with a hard bound, so no test can hang."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def live_children() -> set[int]:
    """Live descendants of the test process (RP's own processes are detached, see
    ``leftover_processes`` for those)."""
    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.add(p.pid)
        except psutil.Error:
            pass
    return out


class LoopLag:
    """Longest overshoot of a 1 ms sleep: how long the event loop was kept from running."""

    def __init__(self) -> None:
        self.max = 0.0
        self._task: asyncio.Task | None = None

    async def _probe(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.max = max(self.max, time.perf_counter() - t - 0.001)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._probe())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def close(flow) -> None:
    """End one test's engine but keep the shared pilot."""
    await flow.shutdown(skip_execution_backend=True)


def sleepers(seconds: str) -> list[psutil.Process]:
    """Processes running ``sleep <seconds>`` (an argument no other test uses).

    Searched machine-wide: RP's pilot is detached from the test process, so its tasks are
    not our descendants.
    """
    found = []
    for p in psutil.process_iter():
        try:
            cmd = p.cmdline()
            if len(cmd) == 2 and cmd[0].endswith("sleep") and cmd[1] == seconds \
                    and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


@contextlib.contextmanager
def live_backend(backend: Any) -> Iterator[Any]:
    """Start ``backend`` and wait for its pilot; at the end shut it down and check that RP
    left no process behind (ours, and its detached ones)."""
    from asyncflow_hpc.backends.radical import leftover_processes

    refuse_network_tools()
    before = live_children()
    try:
        run(backend.start(), 180)
        run(backend.wait_active(), 240)
        yield backend
    finally:
        run(backend.shutdown(), 180)
        time.sleep(0.5)
        assert not leftover_processes(backend.session_uid or "-", backend.work_dir)
        assert not (live_children() - before), "RADICAL-Pilot left processes behind"
