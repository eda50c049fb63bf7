"""A 2-core pilot: raptor (master + worker) takes every core, executables must still run.

One pilot (``cores=2``) for the module, separate from the shared 4-core one: function tasks
and executables alternate on it (raptor is stopped for an executable and started again for
the next function task), and a task larger than the pilot fails at once instead of waiting
for the pilot's walltime.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time

import pytest
from radical_helpers import close, live_backend, run

from asyncflow_hpc import ConfigurationError, WorkflowEngine
from asyncflow_hpc.backends.radical import RadicalPilotBackend

pytestmark = pytest.mark.radical

SMALL_PILOT = {"resource": "local.localhost", "cores": 2, "runtime": 20}


def _two_core_node() -> dict:
    """local.localhost with a real 2-core node: RP rounds a pilot up to whole nodes, and the
    shipped entry fakes 8 cores per node (``cores=2`` alone would give the agent 8). A
    site_config entry replaces the backend's own local patch, so it repeats its PATH line."""
    pre = [f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH"]
    if sys.prefix != sys.base_prefix:
        pre.append(f"export VIRTUAL_ENV={shlex.quote(sys.prefix)}")
    return {"local.localhost": {"cores_per_node": 2, "pre_bootstrap_0": pre}}


@pytest.fixture(scope="module")
def small_backend(tmp_path_factory):
    # RP's client in this process (client="thread"): this module covers that mode too; RP's
    # own raptor path (warm=False), whose master and worker take both cores
    backend = RadicalPilotBackend(SMALL_PILOT, site_config=_two_core_node(), client="thread",
                                  work_dir=tmp_path_factory.mktemp("rp-small"), warm=False)
    with live_backend(backend):
        rm = run(backend.run_in_client(lambda b: b.pilot.resource_details or {}), 60)
        assert len(rm["node_list"]) * rm["cores_per_node"] == 2, rm  # really 2 cores
        yield backend


async def _flow(backend, tmp_path):
    return await WorkflowEngine.create(backend=backend, work_dir=tmp_path,
                                       install_signal_handlers=False)


@pytest.mark.timeout(300)
def test_functions_and_executables_alternate(small_backend, tmp_path):
    async def main():
        flow = await _flow(small_backend, tmp_path)

        @flow.function_task
        def bump(x, y):
            return int(str(x).strip()) + y

        @flow.executable_task
        def echo(x):
            return ["/bin/echo", str(x)]

        @flow.executable_task(task_description={"cores_per_rank": 2})
        def whole(x):  # the whole pilot
            return ["/bin/echo", x]

        try:
            t0 = time.monotonic()
            first = bump(3, 3)          # starts raptor: master + worker hold both cores
            shown = echo(first)         # needs a core: raptor is stopped for it
            second = bump(shown, 1)     # a fresh raptor
            again = echo(second)        # stopped again
            assert await asyncio.wait_for(again, 180) == "7\n"
            assert await first == 6 and await shown == "6\n" and await second == 7
            print(f"fn -> exe -> fn -> exe on a 2-core pilot: {time.monotonic() - t0:.1f}s")
            # an executable submitted while a function task runs waits for it, then runs
            slow = bump(40, 2)
            side = echo("side")
            assert await asyncio.wait_for(asyncio.gather(slow, side), 180) == [42, "side\n"]
            # one batch, executable first: the function task must not start a raptor that
            # takes the cores before the executable has them; then the other way round
            big, after = whole("big"), bump(1, 1)
            assert await asyncio.wait_for(asyncio.gather(big, after), 180) == ["big\n", 2]
            before, big = bump(2, 2), whole("big2")
            assert await asyncio.wait_for(asyncio.gather(before, big), 180) == [4, "big2\n"]
        finally:
            await close(flow)

    run(main(), 270)


@pytest.mark.timeout(200)
def test_task_larger_than_pilot_fails_at_once(small_backend, tmp_path):
    async def main():
        flow = await _flow(small_backend, tmp_path)

        @flow.function_task
        def ident(x):
            return x

        @flow.executable_task(task_description={"ranks": 3})
        def wide():
            return ["/bin/echo", "never"]

        try:
            assert await asyncio.wait_for(ident(1), 120) == 1  # raptor is up: RP would wait
            t0 = time.monotonic()
            with pytest.raises(ConfigurationError) as info:
                await asyncio.wait_for(wide(), 30)
            assert time.monotonic() - t0 < 10
            text = str(info.value)
            assert "'wide'" in text and "needs 3 core(s)" in text and "2 core(s)" in text, text
            assert await asyncio.wait_for(ident(2), 120) == 2  # the backend still works
        finally:
            await close(flow)

    run(main(), 180)
