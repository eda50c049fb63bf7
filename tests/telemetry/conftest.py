"""Fixtures of the telemetry tests; helpers live in telemetry_testlib.py."""

from __future__ import annotations

import pytest
from telemetry_testlib import ENV


@pytest.fixture
def clean_env(monkeypatch):
    """No telemetry/progress switched on by the developer's environment."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASYNCFLOW_HPC_TELEMETRY_INTERVAL", "0")  # no sampler unless a test asks
    return monkeypatch
