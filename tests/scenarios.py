"""Scenarios that every backend must pass alike, shared by tests/core (local backend) and
tests/radical (RADICAL-Pilot): one body of checks, so the backends cannot drift apart.
(``pythonpath = tests`` in setup.cfg makes this importable from every test folder.)"""

from __future__ import annotations

import pytest

from asyncflow_hpc import MissingOutputError, OutputFile, WorkflowEngine


async def missing_declared_output_fails_the_producer(flow: WorkflowEngine) -> None:
    """A task that does not write the OutputFile it declares fails with MissingOutputError
    naming it; a task that raises first fails with its own error."""

    @flow.function_task
    def forgets(out):
        return 1

    @flow.executable_task
    def exe_forgets(out):
        return "true"

    @flow.function_task
    def fails(out):
        raise ValueError("own error first")

    for task in (forgets, exe_forgets):
        with pytest.raises(MissingOutputError, match="result.csv") as info:
            await task(OutputFile("result.csv"))
        assert info.value.names == ["result.csv"]
    with pytest.raises(ValueError, match="own error first"):
        await fails(OutputFile("result.csv"))
