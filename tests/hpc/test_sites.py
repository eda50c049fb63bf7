"""Site files: precedence, validation errors that name the field, RP shipped names."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncflow_hpc.hpc.rpconfig import shipped_resources
from asyncflow_hpc.hpc.sites import SiteError, find_site, load_site_file, load_sites, site_from_dict

GOOD = """
[sites.mycluster]
scheduler = "slurm"
partition = "compute"
account = "proj42"
qos = "normal"
cores_per_node = 64
gpus_per_node = 4
launcher = "srun"
prepare = ["module load python/3.11", "source $HOME/venv/bin/activate"]
walltime = 45
max_nodes = 16
environment = { OMP_NUM_THREADS = 1 }

[sites.pbsbox]
scheduler = "pbs"
queue = "workq"
project = "abc"
cores_per_node = 32
"""


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No user or project site files leak in from the machine running the tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("ASYNCFLOW_HPC_SITE_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_good_file(isolated):
    sites = load_site_file(write(isolated / "s.toml", GOOD))
    s = sites["mycluster"]
    assert (s.scheduler, s.partition, s.account, s.qos) == ("slurm", "compute", "proj42", "normal")
    assert s.cores_per_node == 64 and s.gpus_per_node == 4 and s.walltime == 45
    assert s.prepare == ("module load python/3.11", "source $HOME/venv/bin/activate")
    assert s.environment == {"OMP_NUM_THREADS": "1"}
    p = sites["pbsbox"]
    assert (p.partition, p.account, p.launcher) == ("workq", "abc", "mpiexec")


def test_precedence_user_project_sitefile(isolated):
    write(isolated / "xdg" / "asyncflow-hpc" / "sites.toml",
          '[sites.a]\nscheduler = "slurm"\npartition = "user"\n')
    assert find_site("a").partition == "user"
    write(isolated / "asyncflow-hpc.toml", '[sites.a]\nscheduler = "slurm"\npartition = "project"\n')
    assert find_site("a").partition == "project"
    extra = write(isolated / "extra.toml", '[sites.a]\nscheduler = "slurm"\npartition = "extra"\n')
    assert find_site("a", [extra]).partition == "extra"
    assert {"local-slurm", "local-pbs", "a"} <= set(load_sites())


@pytest.mark.parametrize("table, needle", [
    ({"scheduler": "slurm", "cores_per_nod": 4}, "'cores_per_nod' (did you mean 'cores_per_node'?)"),
    ({"scheduler": "slurm", "walltme": 4}, "did you mean 'walltime'?"),
    ({"scheduler": "slurm", "modules": ["x"]}, "did you mean 'prepare'?"),
    ({"scheduler": "lsf"}, "scheduler = 'lsf': choose one of slurm, pbs"),
    ({"scheduler": "slurm", "cores_per_node": "64"}, "sites.c.cores_per_node must be an integer"),
    ({"scheduler": "slurm", "cores_per_node": True}, "cores_per_node must be an integer"),
    ({"scheduler": "slurm", "walltime": 0}, "walltime must be >= 1"),
    ({"scheduler": "slurm", "partition": "a b"}, "partition = 'a b' is not a valid"),
    ({"scheduler": "slurm", "account": "x;rm -rf /"}, "account"),
    ({"scheduler": "slurm", "prepare": ["ok", "bad\nline"]}, "prepare[1] must not contain newlines"),
    ({"scheduler": "slurm", "prepare": [1]}, "prepare[0] must be a string"),
    ({"scheduler": "slurm", "launcher": "aprun"}, "choose one of srun, mpirun, mpiexec"),
    ({"scheduler": "pbs", "launcher": "srun"}, "needs scheduler = 'slurm'"),
    ({"scheduler": "pbs", "qos": "high"}, "PBS has no QOS"),
    ({"scheduler": "slurm", "environment": {"1BAD": "x"}}, "not a valid environment variable"),
    ({"scheduler": "slurm", "directives": ["constraint=x"]}, "must be a scheduler option"),
    ({"scheduler": "slurm", "walltime": 90, "max_walltime": 60}, "exceeds max_walltime"),
    ({"partition": "x"}, "needs a scheduler"),
])
def test_bad_fields_are_named(table, needle):
    with pytest.raises(SiteError) as err:
        site_from_dict("c", table, "file.toml")
    assert needle in str(err.value)
    assert "file.toml" in str(err.value)


@pytest.mark.parametrize("value, minutes", [
    (90, 90), ("90", 90), ("01:30:00", 90), ("1:30:30", 91), ("45:30", 46), ("1-12:00:00", 2160),
    ("2-0", 2880), ("1-1:30", 1530),
])
def test_walltime_in_scheduler_forms(value, minutes):
    site = site_from_dict("w", {"scheduler": "slurm", "walltime": value,
                                "max_walltime": "2-00:00:00"})
    assert site.walltime == minutes and site.max_walltime == 2880


@pytest.mark.parametrize("value", ["1h", "1:2:3:4", "-5", "", "0:00:00"])
def test_a_walltime_that_is_not_a_duration_is_named(value):
    with pytest.raises(SiteError, match="walltime"):
        site_from_dict("w", {"scheduler": "slurm", "walltime": value})


def test_bad_names_and_files(isolated):
    with pytest.raises(SiteError, match="site name"):
        site_from_dict("bad name", {"scheduler": "slurm"})
    with pytest.raises(SiteError, match="not valid TOML"):
        load_site_file(write(isolated / "broken.toml", "[sites.a\n"))
    with pytest.raises(SiteError, match="unknown top-level key 'site'.*did you mean 'sites'"):
        load_site_file(write(isolated / "top.toml", '[site.a]\nscheduler = "slurm"\n'))
    with pytest.raises(SiteError, match="does not exist"):
        find_site("a", [isolated / "missing.toml"])
    with pytest.raises(SiteError, match="unknown site 'local-slrum'.*did you mean 'local-slurm'"):
        find_site("local-slrum")


def test_site_file_from_env(isolated, monkeypatch):
    path = write(isolated / "env.toml", '[sites.fromenv]\nscheduler = "pbs"\ncores_per_node = 8\n')
    monkeypatch.setenv("ASYNCFLOW_HPC_SITE_FILE", str(path))
    assert find_site("fromenv").scheduler == "pbs"


@pytest.mark.skipif(not shipped_resources(), reason="radical.pilot not installed")
def test_rp_shipped_names_are_sites(isolated):
    frontier = find_site("ornl.frontier")
    assert frontier.is_rp_shipped and frontier.scheduler == "slurm" and frontier.launcher == "srun"
    assert frontier.cores_per_node == 64
    polaris = find_site("anl.polaris")
    assert polaris.scheduler == "pbs" and polaris.launcher == "mpiexec"
    based = site_from_dict("mine", {"rp_resource": "anl.polaris", "queue": "prod"})
    assert based.scheduler == "pbs" and based.partition == "prod"
    with pytest.raises(SiteError, match="did you mean 'ornl.frontier'"):
        site_from_dict("x", {"rp_resource": "ornl.fronteir"})
    with pytest.raises(SiteError, match="sites support SLURM and PBS only"):
        find_site("llnl.lassen")
