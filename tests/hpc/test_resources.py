"""Site -> RADICAL-Pilot resource config: structure, keys, modes; checked against RP if present."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from asyncflow_hpc.errors import ConfigurationError
from asyncflow_hpc.hpc.allocation import Allocation
from asyncflow_hpc.hpc.resources import (
    RESOURCE_KEYS,
    config_file,
    pilot_options,
    radical_backend_options,
    resource_entry,
    validate_resource_entry,
    write_resource_config,
)
from asyncflow_hpc.hpc.rpconfig import shipped_resources
from asyncflow_hpc.hpc.sites import find_site, site_from_dict

SLURM = site_from_dict("my-cluster", {"scheduler": "slurm", "partition": "debug", "qos": "hi",
                                      "account": "proj", "reservation": "res1",
                                      "cores_per_node": 48, "prepare": ["module load py"]})
PBS = site_from_dict("pbsbox", {"scheduler": "pbs", "queue": "workq", "account": "abc",
                                "cores_per_node": 32, "launcher": "mpiexec"})
ALLOC = Allocation("slurm", "99", ("n1", "n2"), 4)
PBS_ALLOC = Allocation("pbs", "7.server", ("a",), 16, pbs_job_id="7.server")


def test_login_mode_slurm():
    e = resource_entry(SLURM, in_allocation=False)
    assert e["schemas"] == {"batch": {"job_manager_endpoint": "slurm://localhost/",
                                      "filesystem_endpoint": "file://localhost/"}}
    assert e["default_schema"] == "batch" and e["resource_manager"] == "SLURM"
    assert e["launch_methods"]["order"] == ["SRUN", "FORK"]
    assert e["default_queue"] == "debug" and e["cores_per_node"] == 48
    assert "module load py" in e["pre_bootstrap_0"]
    assert set(e) <= set(RESOURCE_KEYS)


def test_in_allocation_slurm():
    e = resource_entry(SLURM, in_allocation=True, allocation=ALLOC)
    assert e["schemas"]["allocation"]["job_manager_endpoint"] == "fork://localhost/"
    assert e["resource_manager"] == "SLURM" and e["launch_methods"]["order"][0] == "SRUN"
    assert e["cores_per_node"] == 4  # what the job got, not what the hardware has


def test_pbs_modes():
    login = resource_entry(PBS, in_allocation=False)
    assert login["schemas"]["batch"]["job_manager_endpoint"] == "pbspro://localhost/"
    assert login["resource_manager"] == "PBSPRO" and login["launch_methods"]["order"] == ["MPIEXEC", "FORK"]
    inside = resource_entry(PBS, in_allocation=True, allocation=PBS_ALLOC)
    assert inside["schemas"]["allocation"]["job_manager_endpoint"] == "fork://localhost/"
    assert inside["resource_manager"] == "PBSPRO" and inside["cores_per_node"] == 16
    # Torque's qsub over SLURM: the allocation is really SLURM's
    torque = resource_entry(PBS, in_allocation=True, allocation=ALLOC)
    assert torque["resource_manager"] == "SLURM"
    no_cores = site_from_dict("x", {"scheduler": "pbs"})
    with pytest.raises(ConfigurationError, match="cores_per_node"):
        resource_entry(no_cores, in_allocation=True, allocation=Allocation("pbs", "1", ("a",), None))


def test_write_both_modes(tmp_path):
    login = write_resource_config(SLURM, tmp_path, in_allocation=False)
    inside = write_resource_config(SLURM, tmp_path, in_allocation=True, allocation=ALLOC)
    assert (login, inside) == ("afhpc_my_cluster.batch", "afhpc_my_cluster.allocation")
    path = config_file(SLURM, tmp_path)
    assert path == tmp_path / ".radical/pilot/configs/resource_afhpc_my_cluster.json"
    data = json.loads(path.read_text())
    assert set(data) == {"batch", "allocation"}
    for entry in data.values():
        validate_resource_entry(entry)


def test_pilot_options():
    assert pilot_options(SLURM, nodes=2, runtime=15) == {
        "nodes": 2, "runtime": 15, "queue": "debug:hi", "project": "proj:res1"}
    assert pilot_options(PBS) == {"nodes": 1, "runtime": 30, "queue": "workq", "project": "abc"}
    inside = pilot_options(SLURM, in_allocation=True, allocation=ALLOC, runtime=20)
    assert inside == {"nodes": 2, "runtime": 20}
    with pytest.raises(ConfigurationError, match="this allocation has 2"):
        pilot_options(SLURM, nodes=3, in_allocation=True, allocation=ALLOC)
    with pytest.raises(ConfigurationError, match="no SLURM or PBS allocation"):
        pilot_options(SLURM, in_allocation=True, allocation=None)


@pytest.mark.parametrize("patch, needle", [
    ({"cores_per_nod": 2}, "unknown key 'cores_per_nod' (did you mean 'cores_per_node'?)"),
    ({"cores_per_node": "2"}, "'cores_per_node' must be int"),
    ({"default_schema": "nope"}, "default_schema 'nope' is not in schemas"),
    ({"resource_manager": "SLRUM"}, "resource_manager 'SLRUM'"),
    ({"launch_methods": {"order": ["SRUN"]}}, "launch method 'SRUN'"),
    ({"schemas": {"batch": {"job_manager_endpoint": "http://x/"}}}, "must start with one of"),
])
def test_validation_names_the_key(patch, needle):
    entry = resource_entry(SLURM, in_allocation=False)
    entry.update(patch)
    with pytest.raises(ConfigurationError) as err:
        validate_resource_entry(entry)
    assert needle in str(err.value)


def test_backend_options_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert radical_backend_options({}) == {}
    env = {"ASYNCFLOW_HPC_SITE": "local-slurm", "ASYNCFLOW_HPC_NODES": "1",
           "ASYNCFLOW_HPC_RUNTIME": "7", "ASYNCFLOW_HPC_IN_ALLOCATION": "1",
           "SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "vm", "SLURM_CPUS_ON_NODE": "2"}
    opts = radical_backend_options(env)
    assert opts["resource"] == "afhpc_local_slurm.allocation"
    assert opts["nodes"] == 1 and opts["runtime"] == 7
    entry = opts["site_config"]["afhpc_local_slurm.allocation"]
    assert entry["cores_per_node"] == 2 and entry["resource_manager"] == "SLURM"
    with pytest.raises(ConfigurationError, match="ASYNCFLOW_HPC_NODES"):
        radical_backend_options({**env, "ASYNCFLOW_HPC_NODES": "two"})


_RP_CHECK = """
import sys
import radical.pilot as rp
import radical.utils as ru
cfgs = ru.Config("radical.pilot.resource", name="*", expand=False)
for name in sys.argv[1:]:
    site, label = name.split(".")
    rcfg = rp.ResourceConfig(from_dict=cfgs[site][label])
    rcfg.verify()
    assert rcfg.default_schema in rcfg.schemas, name
    print(name, rcfg.resource_manager, rcfg.schemas[rcfg.default_schema].job_manager_endpoint)
assert "ornl" in cfgs  # the shipped ones are still there
"""


@pytest.mark.skipif(not shipped_resources(), reason="radical.pilot not installed")
def test_rp_accepts_generated_configs(tmp_path):
    """RP's own loader and ResourceConfig schema take what we write (in a subprocess: RP's
    import installs fork hooks that the test process should not carry)."""
    names = [write_resource_config(SLURM, tmp_path, in_allocation=False),
             write_resource_config(SLURM, tmp_path, in_allocation=True, allocation=ALLOC),
             write_resource_config(PBS, tmp_path, in_allocation=False),
             write_resource_config(PBS, tmp_path, in_allocation=True, allocation=PBS_ALLOC)]
    env = {**os.environ, "RADICAL_CONFIG_USER_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", _RP_CHECK, *names], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:4] == [
        "afhpc_my_cluster.batch SLURM slurm://localhost/",
        "afhpc_my_cluster.allocation SLURM fork://localhost/",
        "afhpc_pbsbox.batch PBSPRO pbspro://localhost/",
        "afhpc_pbsbox.allocation PBSPRO fork://localhost/"]


@pytest.mark.skipif(not shipped_resources(), reason="radical.pilot not installed")
def test_rp_shipped_site():
    polaris = find_site("anl.polaris")
    assert radical_backend_options({"ASYNCFLOW_HPC_SITE": "anl.polaris"})["resource"] == "anl.polaris"
    inside = resource_entry(polaris, in_allocation=True, allocation=PBS_ALLOC)
    assert inside["schemas"] == {"allocation": {"job_manager_endpoint": "fork://localhost/",
                                                "filesystem_endpoint": "file://localhost/"}}
    assert inside["launch_methods"]["order"] == ["MPIEXEC"] and inside["cores_per_node"] == 16
