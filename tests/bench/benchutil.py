"""Helpers for the benchmark tests (not a conftest: tests/core imports its own as conftest)."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest


def run(coro, timeout: float = 120):
    """Run a coroutine in a fresh loop with a hard bound, so no test can hang."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def need_mpirun() -> None:
    """Skip without an MPI launcher; fail under CI, which installs OpenMPI (scripts/test.sh)."""
    if shutil.which("mpirun") or shutil.which("mpiexec"):
        return
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail("CI=true but no mpirun/mpiexec on PATH", pytrace=False)
    pytest.skip("no mpirun/mpiexec on PATH")
