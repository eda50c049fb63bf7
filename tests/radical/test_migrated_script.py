"""The same radical.asyncflow script gives the same observable results on a real pilot as on
the local backend (tests/core/test_migrated_script.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from test_migrated_script import expected, run_migrated  # noqa: E402

pytestmark = pytest.mark.radical


@pytest.mark.timeout(900)
def test_migrated_script_same_on_a_pilot_and_locally(tmp_path):
    local = run_migrated(tmp_path / "local", ASYNCFLOW_HPC_BACKEND="local")
    pilot = run_migrated(tmp_path / "pilot", ASYNCFLOW_HPC_BACKEND="radical",
                         RADICAL_PROFILE="FALSE", RADICAL_DEFAULT_IFACE="lo")
    assert pilot == local
    assert {k: v for k, v in pilot.items() if k != "components"} == expected()
