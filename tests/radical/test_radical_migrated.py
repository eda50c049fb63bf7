"""The same radical.asyncflow script gives the same observable results on a real pilot as on
the local backend (tests/core/test_migrated_script.py)."""

import importlib.util
from pathlib import Path

import pytest

# the local side of the comparison, loaded under its own name (test modules share a namespace)
_spec = importlib.util.spec_from_file_location(
    "migrated_local", Path(__file__).resolve().parents[1] / "core" / "test_migrated_script.py")
_local = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_local)
expected, run_migrated = _local.expected, _local.run_migrated

pytestmark = pytest.mark.radical


@pytest.mark.timeout(900)
def test_migrated_script_same_on_a_pilot_and_locally(tmp_path):
    local = run_migrated(tmp_path / "local", ASYNCFLOW_HPC_BACKEND="local")
    pilot = run_migrated(tmp_path / "pilot", ASYNCFLOW_HPC_BACKEND="radical",
                         RADICAL_PROFILE="FALSE", RADICAL_DEFAULT_IFACE="lo")
    assert pilot == local
    assert {k: v for k, v in pilot.items() if k != "components"} == expected()
