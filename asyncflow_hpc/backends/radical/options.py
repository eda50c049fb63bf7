"""The RADICAL-Pilot backend's options and their validation (no radical.pilot needed).

Everything that can be checked without RP is checked here, at construction, before any
process or thread starts; an unknown key names the right one.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import ConfigurationError
from ...suggestions import did_you_mean

__all__ = ["CLIENT_MODES", "DEFAULT_RESOURCE", "ENV_CLIENT", "ENV_RESOURCE", "PILOT_KEYS",
           "RAPTOR_KEYS", "WARM_KEYS", "Options", "validate_pilot_keywords", "validate_raptor",
           "validate_warm"]

DEFAULT_RESOURCE = "local.localhost"
ENV_RESOURCE = "ASYNCFLOW_HPC_RESOURCE"
#: pilot runtime (minutes) when none is given: RP's own default (10) ends most campaigns early
DEFAULT_RUNTIME = 60
ENV_CLIENT = "ASYNCFLOW_HPC_RP_CLIENT"
CLIENT_MODES = ("process", "thread")
#: where RP's client runs unless ``client=`` or $ASYNCFLOW_HPC_RP_CLIENT says otherwise
DEFAULT_CLIENT = "process"


@dataclass(frozen=True)
class Options:
    """The checked options of one backend (they also travel to the client process)."""

    pilot: dict[str, Any]  # PilotDescription fields
    raptor: dict[str, Any]
    work_dir: Path
    on_pilot_failure: str
    max_pilot_restarts: int
    site_config: dict[str, dict[str, Any]]
    nice: int
    client: str
    warm: dict[str, Any]  # {} when small tasks take RP's own path too
    #: (scheduler, options) a login-node pilot's batch job gets beyond RP's own
    batch_options: tuple[str, tuple[str, ...]] | None = None

    @classmethod
    def parse(cls, resources: Mapping[str, Any] | None, pilot_keywords: Mapping[str, Any], *,
              raptor: Mapping[str, Any] | None, work_dir: str | os.PathLike | None,
              on_pilot_failure: str, max_pilot_restarts: int,
              site_config: Mapping[str, Mapping[str, Any]] | None, nice: int,
              client: str | None, warm: bool | Mapping[str, Any] | None = None,
              batch_options: tuple[str, Sequence[str]] | None = None) -> Options:
        """Check the constructor's arguments; raises ConfigurationError naming the bad one."""
        merged = dict(resources or {})
        for key, value in pilot_keywords.items():
            if key in merged:
                raise ConfigurationError(f"pilot keyword {key!r} given twice")
            merged[key] = value
        pd = validate_pilot_keywords(merged)  # raises before RP is ever loaded
        if importlib.util.find_spec("radical") is None or \
                importlib.util.find_spec("radical.pilot") is None:
            raise ConfigurationError(
                "the RADICAL-Pilot backend needs radical.pilot, which is not installed; "
                "pip install 'asyncflow-hpc[radical]'")
        if not pd.get("resource"):
            pd["resource"] = os.environ.get(ENV_RESOURCE, "").strip() or DEFAULT_RESOURCE
        if "." not in pd["resource"]:
            raise ConfigurationError(
                f"resource {pd['resource']!r} must be '<site>.<entry>', e.g. 'local.localhost'")
        if not pd.get("nodes") and not pd.get("cores"):
            pd["nodes"] = 1
        pd.setdefault("runtime", DEFAULT_RUNTIME)
        pd["exit_on_error"] = False  # RP would otherwise SIGTERM this process on pilot failure
        if on_pilot_failure not in ("fail", "resubmit"):
            raise ConfigurationError(
                f"on_pilot_failure must be 'fail' or 'resubmit', got {on_pilot_failure!r}")
        if isinstance(max_pilot_restarts, bool) or not isinstance(max_pilot_restarts, int) \
                or max_pilot_restarts < 0:
            raise ConfigurationError(
                f"max_pilot_restarts must be an integer >= 0, got {max_pilot_restarts!r}")
        if site_config is not None and not (
                isinstance(site_config, Mapping)
                and all(isinstance(k, str) and k.count(".") == 1 for k in site_config)):
            raise ConfigurationError(
                "site_config must map '<site>.<entry>' names to resource config dicts")
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ConfigurationError(f"nice must be an integer 0..19, got {nice!r}")
        if work_dir is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            work_dir = Path.cwd() / "asyncflow-work" / f"radical-{stamp}-{os.getpid()}"
        return cls(pilot=pd, raptor=validate_raptor(raptor), work_dir=Path(work_dir).absolute(),
                   on_pilot_failure=on_pilot_failure, max_pilot_restarts=max_pilot_restarts,
                   site_config={k: dict(v) for k, v in (site_config or {}).items()},
                   nice=nice, client=_client_mode(client), warm=validate_warm(warm),
                   batch_options=_batch_options(batch_options))

    @property
    def resource(self) -> str:
        return self.pilot["resource"]


def _batch_options(value: Any) -> tuple[str, tuple[str, ...]] | None:
    if value is None:
        return None
    try:
        scheduler, options = value
        options = tuple(options)
    except (TypeError, ValueError):
        scheduler, options = None, ()
    if scheduler not in ("slurm", "pbs") or not all(
            isinstance(o, str) and o.startswith("-") for o in options):
        raise ConfigurationError(
            "batch_options must be (scheduler, [options]) with scheduler 'slurm' or 'pbs' and "
            f"options starting with '-', got {value!r}")
    return (scheduler, options) if options else None


def _client_mode(client: str | None) -> str:
    """``client=``, else $ASYNCFLOW_HPC_RP_CLIENT, else the default; checked."""
    where = "client="
    if client is None:
        client = os.environ.get(ENV_CLIENT, "").strip() or DEFAULT_CLIENT
        where = f"${ENV_CLIENT}"
    if not isinstance(client, str) or client.strip().lower() not in CLIENT_MODES:
        raise ConfigurationError(
            f"{where} must be 'process' (RP's client in a child process) or 'thread' (in this "
            f"process), got {client!r}")
    return client.strip().lower()


# ----------------------------------------------------------------------------- pilot keys

#: PilotDescription fields of radical.pilot 1.103, with the check applied to each value
PILOT_KEYS: dict[str, str] = {
    "resource": "str", "access_schema": "str", "runtime": "int+", "sandbox": "path",
    "nodes": "int", "cores": "int", "gpus": "int", "memory": "int", "backup_nodes": "int",
    "queue": "str", "project": "str", "job_name": "str", "cleanup": "bool",
    "exit_on_error": "false", "input_staging": "list", "output_staging": "list",
    "prepare_env": "dict", "services": "list", "app_comm": "list", "enable_ep": "bool",
    "reconfig_src": "str", "uid": "str",
}
#: names that are accepted and renamed (unambiguous synonyms)
PILOT_SYNONYMS = {"account": "project"}
#: names RP rejects or that mean something else; the error points at the right key
PILOT_ALIASES = {
    "walltime": "runtime", "wall_time": "runtime", "time": "runtime", "minutes": "runtime",
    "gpus_per_node": "gpus", "partition": "queue", "allocation": "project",
    "cores_per_node": "cores", "num_nodes": "nodes", "n_nodes": "nodes", "ncores": "cores",
}
_PILOT_HINTS = {
    "runtime": "runtime is in minutes",
    "gpus": "gpus is the pilot's total number of GPUs",
    "cores": "cores is the pilot's total number of cores",
}


def validate_pilot_keywords(kw: Mapping[str, Any]) -> dict[str, Any]:
    """Check user pilot keywords; return a dict RP's PilotDescription accepts."""
    out: dict[str, Any] = {}
    for key, value in kw.items():
        name = PILOT_SYNONYMS.get(key, key)
        if name not in PILOT_KEYS:
            hint = did_you_mean(key, PILOT_KEYS, PILOT_ALIASES)
            target = PILOT_ALIASES.get(key)
            extra = f"; {_PILOT_HINTS[target]}" if target in _PILOT_HINTS else ""
            raise ConfigurationError(
                f"unknown pilot keyword {key!r} for RadicalPilotBackend{hint}{extra}; "
                f"valid keys: {', '.join(sorted(PILOT_KEYS))}")
        if name in out:
            raise ConfigurationError(f"pilot keyword {name!r} given twice (as {key!r})")
        out[name] = _check_pilot_value(name, value)
    return out


def _check_pilot_value(key: str, value: Any) -> Any:
    kind = PILOT_KEYS[key]
    bad = ConfigurationError
    if value is None:
        return None
    if kind in ("int", "int+"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < (kind == "int+"):
            raise bad(f"pilot keyword {key!r} must be an integer "
                      f"{'> 0' if kind == 'int+' else '>= 0'}, got {value!r}"
                      + (" (minutes)" if key == "runtime" else ""))
        return value
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise bad(f"pilot keyword {key!r} must be a non-empty string, got {value!r}")
        return value
    if kind == "path":
        if not isinstance(value, (str, os.PathLike)):
            raise bad(f"pilot keyword {key!r} must be a path, got {value!r}")
        return os.path.abspath(os.fspath(value))
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad(f"pilot keyword {key!r} must be True or False, got {value!r}")
        return value
    if kind == "false":  # exit_on_error=True makes RP SIGTERM this very process
        if value is not False:
            raise bad("exit_on_error must be False: with True RADICAL-Pilot kills the client "
                      "process when the pilot fails; asyncflow-hpc fails the tasks instead")
        return False
    if kind == "list":
        if not isinstance(value, (list, tuple)):
            raise bad(f"pilot keyword {key!r} must be a list, got {value!r}")
        return list(value)
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise bad(f"pilot keyword {key!r} must be a mapping, got {value!r}")
        return dict(value)
    raise AssertionError(kind)


# ----------------------------------------------------------------------------- raptor config

#: keys of ``raptor={...}``
RAPTOR_KEYS = {
    "workers": "number of raptor workers (default 1)",
    "cores_per_worker": "cores of each worker = function tasks it runs at once",
    "gpus_per_worker": "GPUs of each worker",
    "master": "extra TaskDescription keys of the master",
    "worker": "extra TaskDescription keys of each worker",
    "environment": "environment of the workers (and so of function tasks)",
    "pythonpath": "pass this process's sys.path to the workers (default True)",
}


#: ``warm={...}`` keys (the warm worker pools inside the pilot, see backends/radical/warm)
WARM_KEYS = {
    "workers_per_node": "tasks at once per node (default: the pilot's cores per node)",
    "address": "address the pool agents connect back to (default: 127.0.0.1 for local "
               "pilots, else this host's)",
    "python": "interpreter of the pool agents (default: this one)",
    "environment": "extra environment of the agents and their workers",
}
ENV_WARM = "ASYNCFLOW_HPC_RP_WARM"


def validate_warm(cfg: bool | Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``warm=``: True/None (on, the default; ``$ASYNCFLOW_HPC_RP_WARM=0`` turns the
    default off), False (every task through RP), or a dict of :data:`WARM_KEYS`. Returns the
    settings, ``{"on": False}`` when off."""
    if cfg is None:
        flag = os.environ.get(ENV_WARM, "1").strip().lower()
        if flag not in ("0", "1", "false", "true", "no", "yes", "off", "on", ""):
            raise ConfigurationError(f"{ENV_WARM}={flag!r}: use 1 or 0")
        cfg = flag not in ("0", "false", "no", "off")
    if isinstance(cfg, bool):
        return {"on": cfg}
    if not isinstance(cfg, Mapping):
        raise ConfigurationError(f"warm= must be True, False or a dict, got {cfg!r}")
    out: dict[str, Any] = {"on": True}
    for key, value in cfg.items():
        if key not in WARM_KEYS:
            raise ConfigurationError(
                f"unknown warm= key {key!r}{did_you_mean(key, WARM_KEYS)}; "
                f"valid keys: {', '.join(WARM_KEYS)}")
        if key == "workers_per_node" and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigurationError(f"warm[{key!r}] must be an integer >= 1, got {value!r}")
        if key in ("address", "python") and (not isinstance(value, str) or not value):
            raise ConfigurationError(f"warm[{key!r}] must be a non-empty string, got {value!r}")
        if key == "environment" and not isinstance(value, Mapping):
            raise ConfigurationError(f"warm[{key!r}] must be a mapping, got {value!r}")
        out[key] = value
    return out


def validate_raptor(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``raptor={...}``; return it as a dict."""
    cfg = dict(cfg or {})
    for key, value in cfg.items():
        if key not in RAPTOR_KEYS:
            raise ConfigurationError(
                f"unknown raptor= key {key!r}{did_you_mean(key, RAPTOR_KEYS)}; "
                f"valid keys: {', '.join(RAPTOR_KEYS)}")
        if key in ("workers", "cores_per_worker") and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigurationError(f"raptor[{key!r}] must be an integer >= 1, got {value!r}")
        if key == "gpus_per_worker" and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ConfigurationError(f"raptor[{key!r}] must be a number >= 0, got {value!r}")
        if key in ("master", "worker", "environment") and not isinstance(value, Mapping):
            raise ConfigurationError(f"raptor[{key!r}] must be a mapping, got {value!r}")
        if key == "pythonpath" and not isinstance(value, bool):
            raise ConfigurationError("raptor['pythonpath'] must be True or False")
    return cfg
