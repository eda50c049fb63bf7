"""Thread and process pools (functions shipped with cloudpickle)."""

import asyncio
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from conftest import run

from asyncflow_hpc import ConfigurationError


def test_plain_functions_run_in_the_thread_pool(make_flow):
    async def main():
        flow = await make_flow(ThreadPoolExecutor(3))
        loop_thread = threading.get_ident()

        @flow.function_task
        def where():
            return threading.get_ident()

        @flow.function_task
        async def off_loop():
            return threading.get_ident()

        @flow.function_task(inline=True)
        async def on_loop():
            return threading.get_ident()

        idents = await asyncio.gather(*[where() for _ in range(10)])
        assert loop_thread not in idents
        assert await off_loop() != loop_thread  # async bodies run in the executor by default
        assert await on_loop() == loop_thread  # inline=True: on the engine's loop
        await flow.shutdown()

    run(main())


def test_process_pool_ships_closures_with_cloudpickle(make_flow):
    async def main():
        flow = await make_flow(ProcessPoolExecutor(2))
        factor = 7

        @flow.function_task
        def scale(x):
            import os
            return x * factor, os.getpid()

        @flow.function_task
        async def async_in_process(x):
            await asyncio.sleep(0)
            return x + 1

        import os
        res = await asyncio.gather(*[scale(i) for i in range(4)])
        assert [r[0] for r in res] == [0, 7, 14, 21]
        assert all(pid != os.getpid() for _, pid in res)
        assert await async_in_process(1) == 2

        @flow.function_task
        def takes(x):
            return 1

        lock = threading.Lock()
        with pytest.raises(ConfigurationError, match="not picklable"):
            await takes(lock)
        await flow.shutdown()

    run(main(), timeout=120)
