import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from asyncflow_hpc import LocalExecutionBackend, WorkflowEngine


def run(coro, timeout: float = 60):
    """Run a coroutine in a fresh loop with a hard bound, so no test can hang."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def make_flow(tmp_path):
    """Async factory of engines on the local backend; the test shuts them down."""

    async def make(executor=None, **kw):
        backend = await LocalExecutionBackend(executor or ThreadPoolExecutor(4))
        kw.setdefault("install_signal_handlers", False)
        return await WorkflowEngine.create(backend=backend, work_dir=tmp_path, **kw)

    return make
