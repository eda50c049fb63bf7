"""Fixtures for the RADICAL-Pilot backend tests: one real pilot on local.localhost per session.

A pilot costs 15-50 s to start, so every test that only needs *a* pilot shares one
(``rp_backend``), each test with its own engine (and event loop) on top of it. Tests that
kill a pilot start their own backend.

The shared backend runs in the default mode, RP's client in a child process; the small-pilot
module and the seed example run RP's client in the test's own process (``client="thread"``).
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RADICAL_PROFILE", "FALSE")  # no NTP queries from every RP process
os.environ.setdefault("RADICAL_DEFAULT_IFACE", "lo")

rp = pytest.importorskip("radical.pilot", reason="radical.pilot is not installed")

from radical_helpers import PILOT, live_backend  # noqa: E402

from asyncflow_hpc import WorkflowEngine  # noqa: E402
from asyncflow_hpc.backends.radical import RadicalPilotBackend  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "radical: needs RADICAL-Pilot and starts real pilots on local.localhost")


@pytest.fixture(scope="session")
def rp_backend(tmp_path_factory):
    """The shared backend with an active pilot; shut down (and checked) after the last test."""
    with live_backend(RadicalPilotBackend(PILOT, work_dir=tmp_path_factory.mktemp("rp"))) as b:
        yield b


@pytest.fixture
def make_flow(rp_backend, tmp_path):
    """Async factory: an engine on the shared pilot. Shut it down with ``close(flow)``."""

    async def make(**kw):
        kw.setdefault("install_signal_handlers", False)
        return await WorkflowEngine.create(backend=rp_backend, work_dir=tmp_path, **kw)

    return make
