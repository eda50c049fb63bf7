"""A site as the RADICAL-Pilot resource config and pilot settings it needs.

RADICAL-Pilot reads ``$RADICAL_CONFIG_USER_DIR/.radical/pilot/configs/resource_<site>.json``
and names each entry ``<site>.<entry>``. For a site called ``mycluster`` this module writes
``resource_afhpc_mycluster.json`` with two entries:

* ``afhpc_mycluster.batch`` — login-node mode: RP submits the pilot as a batch job
  (``slurm://localhost/`` or ``pbspro://localhost/``), the agent then reads the job's nodes;
* ``afhpc_mycluster.allocation`` — in-allocation mode: the campaign already runs inside a
  batch job, so the pilot starts by fork (``fork://localhost/``) with no second batch job, the
  agent reads the allocation (resource manager ``SLURM`` / ``PBSPRO``) and launches tasks
  with ``SRUN`` / ``MPIEXEC`` / ``MPIRUN``.

The ``afhpc_`` prefix keeps generated entries apart from RP's shipped ones (user files are
merged over them). RP's own names (``ornl.frontier``) are used as they are from a login node;
inside an allocation their entry is copied with the fork endpoint.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..suggestions import did_you_mean
from .allocation import Allocation, current_allocation, time_left_minutes
from .rpconfig import shipped_resources
from .schedulers import scheduler_for
from .sites import Site, find_site

__all__ = ["ENV", "RESOURCE_KEYS", "config_file", "pilot_options", "probe_cores_per_node",
           "radical_backend_options", "resource_entry", "resource_name", "site_backend_options",
           "site_resource_config", "validate_resource_entry", "write_resource_config"]

#: RP ResourceConfig keys (radical.pilot 1.103 ``resource_config.py``) and their JSON types
RESOURCE_KEYS: dict[str, type | tuple[type, ...]] = {
    "label": str, "description": str, "notes": str, "default_schema": str, "schemas": dict,
    "raptor": dict, "job_manager_endpoint": str, "job_manager_hop": str,
    "filesystem_endpoint": str, "default_remote_workdir": str, "default_queue": str,
    "resource_manager": str, "agent_config": str, "agent_scheduler": str, "agent_spawner": str,
    "pre_bootstrap_0": list, "pre_bootstrap_1": list, "rp_version": str, "virtenv": str,
    "virtenv_mode": str, "python_dist": str, "python_interpreter": str, "launch_methods": dict,
    "lfs_path_per_node": str, "lfs_size_per_node": int, "task_tmp": str, "mem_per_node": int,
    "cores_per_node": int, "gpus_per_node": int, "numa_domain_map": dict, "n_partitions": int,
    "network_interface": str, "system_architecture": dict, "scattered": bool,
    "fake_resources": bool, "mandatory_args": list, "forward_tunnel_endpoint": str,
    "new_session_per_task": bool, "task_pre_launch": list, "task_post_launch": list,
    "task_pre_exec": list, "task_post_exec": list,
}
RESOURCE_MANAGERS = ("SLURM", "PBSPRO", "TORQUE", "FORK", "LSF", "COBALT", "CCM", "YARN",
                     "DEBUG", "FLUX")
LAUNCH_METHODS = ("SRUN", "MPIEXEC", "MPIRUN", "FORK", "APRUN", "JSRUN", "IBRUN", "FLUX",
                  "PRTE", "DRAGON", "CCMRUN", "RSH", "SSH")
_SCHEMES = ("fork", "slurm", "pbspro", "pbs", "torque", "lsf", "flux", "ssh")

#: environment variables that ``asyncflow-hpc run --site ...`` sets for the campaign
ENV = {
    "site": "ASYNCFLOW_HPC_SITE",
    "site_file": "ASYNCFLOW_HPC_SITE_FILE",
    "nodes": "ASYNCFLOW_HPC_NODES",
    "runtime": "ASYNCFLOW_HPC_RUNTIME",
    "in_allocation": "ASYNCFLOW_HPC_IN_ALLOCATION",
}
#: minutes kept free at the end of an allocation so the campaign can close cleanly
CLOSE_MARGIN = 2


def resource_name(site: Site, in_allocation: bool) -> str:
    """The RP resource name for ``site`` in the given mode."""
    if site.is_rp_shipped and not in_allocation:
        return site.name
    return f"{_rp_site(site)}.{'allocation' if in_allocation else 'batch'}"


def _rp_site(site: Site) -> str:
    return "afhpc_" + site.name.replace(".", "_").replace("-", "_")


def config_file(site: Site, config_user_dir: str | os.PathLike[str]) -> Path:
    """Where the site's entries go under a ``RADICAL_CONFIG_USER_DIR``."""
    return Path(config_user_dir) / ".radical" / "pilot" / "configs" / f"resource_{_rp_site(site)}.json"


def _launch_methods(launcher: str) -> dict[str, Any]:
    method = launcher.upper()
    return {"order": [method, "FORK"], method: {}, "FORK": {}}


def _python_on_path() -> list[str]:
    """Put this campaign's Python first on the pilot's PATH when no venv/conda names it.

    A batch pilot starts with a clean environment (SLURM jobs get ``--export=NONE``), and RP
    without ``VIRTUAL_ENV``/``CONDA_PREFIX`` runs whatever ``python3`` is found there.
    """
    if os.environ.get("VIRTUAL_ENV") or os.environ.get("CONDA_PREFIX"):
        return []
    return [f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:\"$PATH\""]


def resource_entry(site: Site, *, in_allocation: bool,
                   allocation: Allocation | None = None) -> dict[str, Any]:
    """The RP resource config entry for ``site`` (login-node or in-allocation mode)."""
    shipped = shipped_resources().get(site.rp_resource or "")
    entry: dict[str, Any] = json.loads(json.dumps(shipped)) if shipped else {}
    manager = "SLURM" if site.scheduler == "slurm" else "PBSPRO"
    if in_allocation and allocation is not None:
        # the allocation says who really manages the nodes (Torque's qsub over SLURM: SLURM)
        manager = "SLURM" if allocation.scheduler == "slurm" else "PBSPRO"
    if in_allocation:
        endpoint = "fork://localhost/"
    else:
        endpoint = "slurm://localhost/" if site.scheduler == "slurm" else "pbspro://localhost/"
    schema = "allocation" if in_allocation else "batch"
    exports = [f"export {k}={shlex.quote(v)}" for k, v in site.environment.items()]
    entry.update({
        "description": entry.get("description") or site.description or f"asyncflow-hpc site {site.name}",
        "default_schema": schema,
        "schemas": {schema: {"job_manager_endpoint": endpoint,
                             "filesystem_endpoint": "file://localhost/"}},
        "resource_manager": manager,
        "agent_config": "default",
        "agent_scheduler": "CONTINUOUS",
        "agent_spawner": "POPEN",
        "rp_version": "installed",
        "virtenv_mode": "local",
        "python_dist": "default",
    })
    if not shipped or site.source != "radical.pilot":
        entry["launch_methods"] = _launch_methods(site.launcher)
        entry["pre_bootstrap_0"] = [*_python_on_path(), *entry.get("pre_bootstrap_0", []),
                                    *site.prepare, *exports]
        entry["default_remote_workdir"] = site.work_dir or entry.get("default_remote_workdir") or "$HOME"
        entry.setdefault("lfs_path_per_node", "/tmp")
        entry.setdefault("lfs_size_per_node", 0)
        entry["gpus_per_node"] = site.gpus_per_node
        if site.partition:
            entry["default_queue"] = site.partition
        if site.cores_per_node:
            entry["cores_per_node"] = site.cores_per_node
    if in_allocation:
        # A pilot sized by nodes needs cores_per_node; inside a job the right value is what
        # the job got on each node (SLURM_CPUS_ON_NODE), not what the hardware has.
        cpus = allocation.cpus_per_node if allocation else None
        if cpus:
            entry["cores_per_node"] = cpus
        elif manager == "SLURM" and not site.cores_per_node:
            entry.pop("cores_per_node", None)  # the agent reads SLURM_CPUS_ON_NODE itself
        elif "cores_per_node" not in entry:
            raise ConfigurationError(
                f"site {site.name!r}: inside a PBS allocation RADICAL-Pilot needs cores_per_node; "
                "set it in the site file")
    validate_resource_entry(entry, f"resource config of site {site.name!r}")
    return entry


def validate_resource_entry(entry: Mapping[str, Any], what: str = "resource config") -> None:
    """Check keys, types and the values RP would only reject at pilot start; name the bad key."""
    for key, value in entry.items():
        if key not in RESOURCE_KEYS:
            raise ConfigurationError(f"{what}: unknown key {key!r}{did_you_mean(key, RESOURCE_KEYS)}")
        kind = RESOURCE_KEYS[key]
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise ConfigurationError(f"{what}: {key!r} must be {getattr(kind, '__name__', kind)}, "
                                     f"got {type(value).__name__} {value!r}")
    schemas = entry.get("schemas") or {}
    default = entry.get("default_schema")
    if default and default not in schemas:
        raise ConfigurationError(f"{what}: default_schema {default!r} is not in schemas")
    for name, schema in schemas.items():
        if not isinstance(schema, Mapping):
            raise ConfigurationError(f"{what}: schemas.{name} must be an object")
        for key in schema:
            if key not in ("job_manager_endpoint", "job_manager_hop", "filesystem_endpoint"):
                raise ConfigurationError(f"{what}: schemas.{name} has unknown key {key!r}")
        endpoint = str(schema.get("job_manager_endpoint", ""))
        if endpoint.split("://")[0] not in _SCHEMES:
            raise ConfigurationError(f"{what}: schemas.{name}.job_manager_endpoint {endpoint!r} "
                                     f"must start with one of {', '.join(s + '://' for s in _SCHEMES)}")
    if entry.get("resource_manager", "SLURM") not in RESOURCE_MANAGERS:
        raise ConfigurationError(f"{what}: resource_manager {entry['resource_manager']!r} is "
                                 f"not one of {', '.join(RESOURCE_MANAGERS)}")
    methods = entry.get("launch_methods") or {}
    for method in methods.get("order", []):
        if method not in LAUNCH_METHODS or method not in methods:
            raise ConfigurationError(f"{what}: launch method {method!r} is unknown or has no "
                                     "entry of its own in launch_methods")
    for key in ("pre_bootstrap_0", "pre_bootstrap_1", "task_pre_launch", "task_pre_exec"):
        if not all(isinstance(line, str) for line in entry.get(key, [])):
            raise ConfigurationError(f"{what}: {key!r} must be a list of strings")


def site_resource_config(site: Site, *, in_allocation: bool,
                         allocation: Allocation | None = None) -> tuple[str, dict[str, Any] | None]:
    """``(resource name, entry)`` for ``site``; entry None for an RP resource RP already knows.

    From a login node RP submits pilots *by nodes*, which needs ``cores_per_node``: when the
    site file does not say, SLURM is asked (``sinfo``).
    """
    name = resource_name(site, in_allocation)
    if site.is_rp_shipped and not in_allocation:
        return name, None
    entry = resource_entry(site, in_allocation=in_allocation, allocation=allocation)
    if not in_allocation and "cores_per_node" not in entry:
        cores = probe_cores_per_node(site)
        if cores is None:
            raise ConfigurationError(
                f"site {site.name!r}: RADICAL-Pilot needs cores_per_node to submit a pilot by "
                "nodes, and the scheduler did not say; set cores_per_node in the site file")
        entry["cores_per_node"] = cores
    return name, entry


def write_resource_config(site: Site, config_user_dir: str | os.PathLike[str], *,
                          in_allocation: bool, allocation: Allocation | None = None) -> str:
    """Write the site's RP config under ``config_user_dir``; return the resource name.

    ``config_user_dir`` is what ``RADICAL_CONFIG_USER_DIR`` must point at. For an RP shipped
    resource used from a login node nothing is written: RP already knows it. The other
    mode's entry in the same file is kept.
    """
    name, entry = site_resource_config(site, in_allocation=in_allocation, allocation=allocation)
    if entry is None:
        return name
    from ..safe_files import private_dir, write_file

    path = config_file(site, config_user_dir)
    private_dir(path.parent)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        entries = {}
    entries[name.split(".", 1)[1]] = entry
    # a new file (O_EXCL) renamed into place: readers never see half a file, and a link
    # planted at the path is refused
    write_file(path, (json.dumps(entries, indent=2, sort_keys=True) + "\n").encode(), 0o600)
    return name


def probe_cores_per_node(site: Site) -> int | None:
    """CPUs per node of the site's partition, asked from its scheduler; None if unknown."""
    return scheduler_for(site.scheduler).cores_per_node(site.partition)


def pilot_options(site: Site, *, nodes: int | None = None, runtime: int | None = None,
                  in_allocation: bool = False, allocation: Allocation | None = None) -> dict[str, Any]:
    """PilotDescription keywords for ``site``: nodes, runtime (minutes), queue, project."""
    if nodes is not None and nodes < 1:
        raise ConfigurationError(f"nodes must be >= 1, got {nodes}")
    if runtime is not None and runtime < 1:
        raise ConfigurationError(f"runtime must be >= 1 minute, got {runtime}")
    if site.max_nodes and nodes and nodes > site.max_nodes:
        raise ConfigurationError(f"site {site.name!r} allows at most {site.max_nodes} nodes, "
                                 f"asked for {nodes}")
    if site.max_walltime and runtime and runtime > site.max_walltime:
        raise ConfigurationError(f"site {site.name!r} allows at most {site.max_walltime} minutes, "
                                 f"asked for {runtime}")
    opts: dict[str, Any] = {}
    if in_allocation:
        if allocation is None:
            raise ConfigurationError(
                "--in-allocation but no SLURM or PBS allocation is visible "
                "(SLURM_JOB_ID/SLURM_JOB_NODELIST or PBS_JOBID unset): run it from a batch script")
        have = len(allocation.nodes)
        if nodes and nodes > have:
            raise ConfigurationError(f"asked for {nodes} nodes but this allocation has {have} "
                                     f"({', '.join(allocation.nodes)})")
        opts["nodes"] = nodes or have
        left = time_left_minutes(allocation)
        budget = max(1, left - CLOSE_MARGIN) if left else None
        chosen = runtime or budget or site.walltime
        opts["runtime"] = min(chosen, budget) if budget else chosen
        return opts
    opts["nodes"] = nodes or 1
    opts["runtime"] = runtime or site.walltime
    if site.partition:
        # PSI/J: queue='partition[:qos]'; on PBS a ':qos' suffix breaks the script
        opts["queue"] = f"{site.partition}:{site.qos}" if site.qos and site.scheduler == "slurm" \
            else site.partition
    if site.account:
        opts["project"] = f"{site.account}:{site.reservation}" if site.reservation else site.account
    return opts


def radical_backend_options(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``RadicalPilotBackend`` from ``ASYNCFLOW_HPC_SITE`` & co.

    Empty when ``ASYNCFLOW_HPC_SITE`` is unset. Otherwise ``resource`` (the RP resource
    name), ``site_config`` (``{resource: entry}``, the generated RP resource config; absent
    for an RP shipped resource used from a login node), ``nodes``, ``runtime`` and, from a
    login node, ``queue`` / ``project``. Inside an allocation (``ASYNCFLOW_HPC_IN_ALLOCATION=1``)
    the pilot takes the allocation's nodes and the time left in it.
    """
    env = os.environ if env is None else env
    name = env.get(ENV["site"], "").strip()
    if not name:
        return {}
    site_files = [env[ENV["site_file"]]] if env.get(ENV["site_file"]) else []
    site = find_site(name, site_files, env={k: v for k, v in env.items() if k != ENV["site_file"]})
    in_alloc = env.get(ENV["in_allocation"], "").strip().lower() in ("1", "true", "yes")
    return site_backend_options(site, nodes=_env_int(env, "nodes"),
                                runtime=_env_int(env, "runtime"), in_allocation=in_alloc, env=env)


def site_backend_options(site: Site, *, nodes: int | None = None, runtime: int | None = None,
                         in_allocation: bool = False,
                         env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``RadicalPilotBackend`` keywords for a pilot on ``site`` (see
    :func:`radical_backend_options`); from a login node also ``batch_options``: the site's
    scheduler and the options its pilot jobs get beyond RP's (memory, exclusive,
    directives)."""
    allocation = current_allocation(env) if in_allocation else None
    opts = pilot_options(site, nodes=nodes, runtime=runtime, in_allocation=in_allocation,
                         allocation=allocation)
    resource, entry = site_resource_config(site, in_allocation=in_allocation,
                                           allocation=allocation)
    opts["resource"] = resource
    if entry is not None:
        opts["site_config"] = {resource: entry}
    if not in_allocation and site.batch_options():
        opts["batch_options"] = (site.scheduler, tuple(site.batch_options()))
    return opts


def _env_int(env: Mapping[str, str], key: str) -> int | None:
    raw = env.get(ENV[key], "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ConfigurationError(f"{ENV[key]} must be a whole number, got {raw!r}")
    return int(raw)
