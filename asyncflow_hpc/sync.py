"""A synchronous entry point for scripts and notebooks that do not want to write asyncio."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .engine import WorkflowEngine

__all__ = ["run_workflow"]

T = TypeVar("T")


def run_workflow(main: Callable[[WorkflowEngine], Awaitable[T]], **engine_options: Any) -> T:
    """Start an engine, run ``await main(flow)``, shut the engine down, return the result.

    ``engine_options`` go to :meth:`WorkflowEngine.create` (``backend=``, ``journal=``, ...)::

        def campaign():
            async def main(flow):
                @flow.function_task
                def square(x):
                    return x * x
                return sum(await asyncio.gather(*[square(i) for i in range(10)]))
            return run_workflow(main)
    """

    async def runner() -> T:
        async with WorkflowEngine.create(**engine_options) as flow:
            return await main(flow)

    return asyncio.run(runner())
