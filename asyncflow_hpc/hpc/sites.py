"""Sites: a cluster described in a few lines of TOML, or as a :class:`Site` built in Python.

A site says what a campaign needs to know about a cluster — scheduler, partition, account,
cores per node, how to launch MPI, which shell lines prepare the environment — once, instead
of in every script. Sites are read, later files winning, from:

1. built-in sites (the loopback test cluster: ``local-slurm``, ``local-pbs``);
2. ``$XDG_CONFIG_HOME/asyncflow-hpc/sites.toml`` (``~/.config/...``): the user's clusters;
3. ``./asyncflow-hpc.toml``: the project's;
4. ``$ASYNCFLOW_HPC_SITE_FILE`` and ``--site-file`` files.

A name that no file defines but RADICAL-Pilot ships (``ornl.frontier``) is a site too.
Every value ends up in batch scripts or RP configs, so each field is checked here: a wrong key
or type is an error that names the file, the site and the field (with a close match, if any).
A script can build the same object itself, as Parsl users build providers:
``Site("mycluster", "slurm", partition="cpu", walltime="02:00:00", memory="64G")``, checked
the same way, and pass it as ``RadicalPilotBackend(site=...)``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..suggestions import did_you_mean
from .rpconfig import shipped_resources
from .schedulers import SCHEDULERS

__all__ = ["LAUNCHERS", "Site", "SiteError", "find_site", "load_site_file",
           "load_sites", "site_file_paths", "site_from_dict"]

LAUNCHERS = ("srun", "mpirun", "mpiexec")
PROJECT_FILE = "asyncflow-hpc.toml"
ENV_SITE_FILE = "ASYNCFLOW_HPC_SITE_FILE"

#: site names: safe in file names, RP resource labels and job names
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: partition, account, qos, reservation: scheduler tokens (no spaces, quotes or shell syntax)
_TOKEN = re.compile(r"^[A-Za-z0-9_.:+@%/,=-]{1,128}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SiteError(ConfigurationError):
    """A site file or site name is wrong; the message names the file, site and field."""


@dataclasses.dataclass(frozen=True)
class Site:
    """One cluster, validated when built (here or by :func:`site_from_dict` from a file).

    ``walltime``/``max_walltime`` take minutes or ``HH:MM:SS``/``D-HH:MM:SS`` (kept as
    minutes); ``memory`` a size per node (``64G``, ``4000M``, or an integer of megabytes);
    ``exclusive`` and ``ntasks_per_node`` are asked of the scheduler only when set;
    ``python`` is the interpreter of the site's environment (after ``prepare``) that batch
    jobs run the campaign with.
    """

    name: str
    scheduler: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    reservation: str | None = None
    cores_per_node: int | None = None
    gpus_per_node: int = 0
    launcher: str = ""  # default: srun on SLURM, mpiexec on PBS
    prepare: tuple[str, ...] = ()
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)
    walltime: int | str = 30
    max_walltime: int | str | None = None
    max_nodes: int | None = None
    directives: tuple[str, ...] = ()
    memory: int | str | None = None
    exclusive: bool = False
    ntasks_per_node: int | None = None
    python: str | None = None
    work_dir: str | None = None
    rp_resource: str | None = None
    description: str = ""
    source: str = "python"

    def __post_init__(self) -> None:
        source, name = self.source, self.name
        if not isinstance(name, str) or not (_NAME.match(name) or source == "radical.pilot"):
            raise SiteError(f"{source}: site name {name!r} must start with a letter and use "
                            "only letters, digits, '_' and '-' (at most 64 characters)")
        for f in dataclasses.fields(self):
            check = _FIELDS.get(f.name)
            value = getattr(self, f.name)
            if check is None or value is None or (f.name != "scheduler" and value == f.default):
                continue
            object.__setattr__(self, f.name, check(f"{source}: sites.{name}.{f.name}", value))
        if not isinstance(self.environment, Mapping) or self.environment == {}:
            object.__setattr__(self, "environment", {})
        if not self.launcher:
            object.__setattr__(self, "launcher", "srun" if self.scheduler == "slurm" else "mpiexec")
        if self.launcher == "srun" and self.scheduler != "slurm":
            raise SiteError(f"{source}: sites.{name}.launcher = 'srun' needs scheduler = 'slurm'")
        if self.scheduler == "pbs" and self.qos:
            raise SiteError(f"{source}: sites.{name}.qos: PBS has no QOS setting (RADICAL-Pilot "
                            "would write an invalid '#PBS -qos' line); use partition/queue")
        if self.max_walltime and self.walltime > self.max_walltime:  # type: ignore[operator]
            raise SiteError(f"{source}: sites.{name}.walltime ({self.walltime} min) exceeds "
                            f"max_walltime ({self.max_walltime} min)")

    def batch_options(self) -> list[str]:
        """Scheduler options this site asks for beyond nodes and time: memory, exclusive
        nodes, then its ``directives`` (as written), for pilot jobs and campaign jobs."""
        out = []
        if self.memory:
            out.append(f"--mem={self.memory}" if self.scheduler == "slurm"
                       else f"-l mem={_pbs_memory(str(self.memory))}")
        if self.exclusive:
            out.append("--exclusive" if self.scheduler == "slurm" else "-l place=excl")
        return out + list(self.directives)

    @property
    def is_rp_shipped(self) -> bool:
        """True for a site that is one of RADICAL-Pilot's own resource names, used as is."""
        return self.source == "radical.pilot"

    def as_dict(self) -> dict[str, Any]:
        """The site's fields as plain data (for ``sites show``), unset ones left out."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value == () or value == {} or (f.name == "description" and not value):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else (
                dict(value) if isinstance(value, Mapping) else value)
        return out


# ---------------------------------------------------------------- field checks
def _str(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SiteError(f"{where} must be a string, got {type(value).__name__} {value!r}")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise SiteError(f"{where} must not contain newlines or control characters: {value!r}")
    return value


def _token(where: str, value: Any) -> str:
    text = _str(where, value)
    if not _TOKEN.match(text):
        raise SiteError(f"{where} = {value!r} is not a valid scheduler name (letters, digits "
                        "and _ . : + @ % / , = - only; no spaces, quotes or shell syntax)")
    return text


def _int(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SiteError(f"{where} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise SiteError(f"{where} must be >= {minimum}, got {value}")
    return value


#: SLURM's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S
_DURATION = re.compile(r"(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?"
                       r"|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)")


def _minutes(where: str, value: Any) -> int:
    """A duration in whole minutes (rounded up): an integer of minutes, or a string in
    SLURM's forms (``90``, ``01:30:00``, ``1-12:00:00``, ``2-0``)."""
    if isinstance(value, str):
        m = _DURATION.fullmatch(value.strip())
        if not m:
            raise SiteError(f"{where} = {value!r} is not a duration: give minutes (90) or "
                            "HH:MM:SS, D-HH:MM:SS, D-HH")
        g = {k: int(v) if v else 0 for k, v in m.groupdict().items()}
        if m.group("d") is not None:
            seconds = ((g["d"] * 24 + g["dh"]) * 60 + g["dm"]) * 60 + g["ds"]
        elif m.group("c") is not None:  # H:M:S
            seconds = (g["a"] * 60 + g["b"]) * 60 + g["c"]
        else:  # M or M:S
            seconds = g["a"] * 60 + g["b"]
        return _int(where, -(-seconds // 60), 1)
    return _int(where, value, 1)


def _choice(choices: Sequence[str]) -> Callable[[str, Any], str]:
    def check(where: str, value: Any) -> str:
        text = _str(where, value).lower()
        if text not in choices:
            raise SiteError(f"{where} = {value!r}: choose one of {', '.join(choices)}"
                            f"{did_you_mean(text, choices)}")
        return text
    return check


def _lines(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise SiteError(f"{where} must be a list of strings, got {type(value).__name__}")
    return tuple(_str(f"{where}[{i}]", v) for i, v in enumerate(value))


def _directives(where: str, lines: tuple[str, ...]) -> tuple[str, ...]:
    for i, line in enumerate(lines):
        if not line.startswith("-"):
            raise SiteError(f"{where}[{i}] = {line!r} must be a scheduler option starting with '-' "
                            "(e.g. \"--constraint=haswell\" or \"-l filesystems=home\")")
    return lines


def _env(where: str, value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise SiteError(f"{where} must be a table of NAME = \"value\", got {type(value).__name__}")
    out: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not _ENV_NAME.match(key):
            raise SiteError(f"{where}: {key!r} is not a valid environment variable name")
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise SiteError(f"{where}.{key} must be a string or number, got {val!r}")
        out[key] = _str(f"{where}.{key}", str(val))
    return out


_MEMORY = re.compile(r"(\d+)\s*([KMGT])?B?", re.IGNORECASE)


def _memory(where: str, value: Any) -> str:
    """Memory per node in SLURM's form (``64G``, ``4000M``); an integer is megabytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"{value}M"
    text = _str(where, value).strip()
    m = _MEMORY.fullmatch(text)
    if not m or int(m.group(1)) < 1:
        raise SiteError(f"{where} = {value!r} is not a memory size: give megabytes (4000) or "
                        "a number with K, M, G or T (64G)")
    return f"{int(m.group(1))}{(m.group(2) or 'M').upper()}"


def _pbs_memory(text: str) -> str:
    """``64G`` -> ``64gb`` (PBS's unit spelling)."""
    return f"{text[:-1]}{text[-1].lower()}b"


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SiteError(f"{where} must be true or false, got {value!r}")
    return value


def _python(where: str, value: Any) -> str:
    text = _str(where, value)
    if not re.fullmatch(r"[A-Za-z0-9_./+-]+", text):
        raise SiteError(f"{where} = {value!r}: give an interpreter's path or name (python3), "
                        "without spaces or shell syntax")
    return text


def _rp_name(where: str, value: Any) -> str:
    text = _str(where, value)
    if text not in shipped_resources():
        known = sorted(shipped_resources())
        hint = did_you_mean(text, known) if known else " (RADICAL-Pilot is not installed)"
        raise SiteError(f"{where} = {value!r} is not a RADICAL-Pilot resource{hint}")
    return text


_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "scheduler": _choice(tuple(SCHEDULERS)),
    "partition": _token,
    "account": _token,
    "qos": _token,
    "reservation": _token,
    "cores_per_node": lambda w, v: _int(w, v, 1),
    "gpus_per_node": lambda w, v: _int(w, v, 0),
    "launcher": _choice(LAUNCHERS),
    "prepare": _lines,
    "environment": _env,
    "walltime": _minutes,
    "max_walltime": _minutes,
    "max_nodes": lambda w, v: _int(w, v, 1),
    "directives": lambda w, v: _directives(w, _lines(w, v)),
    "memory": _memory,
    "exclusive": _bool,
    "ntasks_per_node": lambda w, v: _int(w, v, 1),
    "python": _python,
    "work_dir": _str,
    "rp_resource": _rp_name,
    "description": _str,
}
#: other spellings people reach for; each maps to the field it means
_ALIASES = {"queue": "partition", "project": "account", "default_walltime": "walltime",
            "runtime": "walltime", "max_runtime": "max_walltime", "cores": "cores_per_node",
            "gpus": "gpus_per_node", "modules": "prepare", "env": "environment",
            "sandbox": "work_dir", "resource": "rp_resource", "mpi_launcher": "launcher",
            "mem": "memory", "memory_per_node": "memory", "mem_per_node": "memory",
            "interpreter": "python", "python_interpreter": "python",
            "tasks_per_node": "ntasks_per_node"}
#: keys that belong to tasks, not sites: what to write instead
_TASK_KEYS = {"cpus_per_task": "cores_per_rank", "cores_per_task": "cores_per_rank",
              "cores_per_rank": "cores_per_rank", "gpus_per_task": "gpus_per_rank",
              "ranks": "ranks", "ntasks": "ranks"}
#: aliases accepted as synonyms (PBS says queue and project)
_SYNONYMS = {"queue": "partition", "project": "account", "default_walltime": "walltime"}


def site_from_dict(name: str, data: Mapping[str, Any], source: str = "<dict>") -> Site:
    """Validate one site's table; errors name ``source``, the site and the field."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise SiteError(f"{source}: site name {name!r} must start with a letter and use only "
                        "letters, digits, '_' and '-' (at most 64 characters)")
    if not isinstance(data, Mapping):
        raise SiteError(f"{source}: [sites.{name}] must be a table")
    values: dict[str, Any] = {}
    for key, value in data.items():
        field = _SYNONYMS.get(key, key)
        where = f"{source}: sites.{name}.{key}"
        if key in _TASK_KEYS and field not in _FIELDS:
            raise SiteError(f"{source}: site {name!r} has unknown field {key!r}: cores, GPUs and "
                            "ranks are asked per task, task_description={'"
                            f"{_TASK_KEYS[key]}': N}}; a site says what a node has "
                            "(cores_per_node, gpus_per_node)")
        if field not in _FIELDS:
            raise SiteError(f"{source}: site {name!r} has unknown field {key!r}"
                            f"{did_you_mean(key, _FIELDS, _ALIASES)}; known fields: {', '.join(_FIELDS)}")
        if field in values:
            raise SiteError(f"{where}: {field!r} is given twice (as {key!r} and another name)")
        values[field] = _FIELDS[field](where, value)
    base = shipped_resources().get(values.get("rp_resource", "")) or {}
    if "scheduler" not in values:
        derived = _scheduler_of(base)
        if derived is None:
            raise SiteError(f"{source}: site {name!r} needs a scheduler = \"slurm\" or \"pbs\"")
        values["scheduler"] = derived
    return Site(name=name, source=source, **values)


def _scheduler_of(entry: Mapping[str, Any]) -> str | None:
    manager = str(entry.get("resource_manager", "")).upper()
    if manager == "SLURM":
        return "slurm"
    if manager in ("PBSPRO", "TORQUE", "PBS"):
        return "pbs"
    return None


# ---------------------------------------------------------------- files
def _load_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef]
        except ModuleNotFoundError as exc:
            raise SiteError(f"reading {path} needs Python >= 3.11 or 'pip install tomli'") from exc
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise SiteError(f"cannot read site file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SiteError(f"{path} is not valid TOML: {exc}") from exc


def load_site_file(path: str | os.PathLike[str]) -> dict[str, Site]:
    """Every ``[sites.NAME]`` table of one file, validated."""
    p = Path(path)
    data = _load_toml(p)
    for key in data:
        if key != "sites":
            raise SiteError(f"{p}: unknown top-level key {key!r}{did_you_mean(key, ['sites'])}; "
                            "a site file holds [sites.NAME] tables")
    sites = data.get("sites", {})
    if not isinstance(sites, Mapping):
        raise SiteError(f"{p}: 'sites' must be a table of [sites.NAME] tables")
    return {name: site_from_dict(name, table, str(p)) for name, table in sites.items()}


def site_file_paths(extra: Iterable[str | os.PathLike[str]] = (),
                    env: Mapping[str, str] | None = None) -> list[Path]:
    """The site files that exist, lowest precedence first; ``extra`` files must exist."""
    env = os.environ if env is None else env
    config_home = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    candidates = [config_home / "asyncflow-hpc" / "sites.toml", Path.cwd() / PROJECT_FILE]
    found = [p for p in candidates if p.is_file()]
    named = [env[ENV_SITE_FILE]] if env.get(ENV_SITE_FILE) else []
    for item in [*named, *extra]:
        p = Path(item).expanduser()
        if not p.is_file():
            raise SiteError(f"site file {p} does not exist")
        found.append(p)
    return found


def builtin_sites() -> dict[str, Site]:
    """The loopback test cluster (scripts/slurm/up.sh), as SLURM and through Torque's qsub."""
    return {
        "local-slurm": site_from_dict("local-slurm", {
            "scheduler": "slurm", "launcher": "srun", "walltime": 10, "exclusive": True,
            "description": "the single-node SLURM test cluster on this machine (scripts/slurm/up.sh)",
        }, "built-in"),
        "local-pbs": site_from_dict("local-pbs", {
            "scheduler": "pbs", "launcher": "mpiexec", "walltime": 10,
            "description": "the test cluster through SLURM's Torque-style qsub (slurm-wlm-torque); "
                           "not a real PBS server",
        }, "built-in"),
    }


def load_sites(extra_files: Iterable[str | os.PathLike[str]] = (),
               env: Mapping[str, str] | None = None) -> dict[str, Site]:
    """All sites visible from here; a later file's site replaces an earlier one of that name."""
    sites = builtin_sites()
    for path in site_file_paths(extra_files, env):
        sites.update(load_site_file(path))
    return sites


def rp_site(name: str) -> Site:
    """A RADICAL-Pilot shipped resource (``ornl.frontier``) seen as a site."""
    entry = shipped_resources()[name]
    scheduler = _scheduler_of(entry)
    if scheduler is None:
        raise SiteError(f"RADICAL-Pilot resource {name!r} uses resource manager "
                        f"{entry.get('resource_manager')!r}; sites support SLURM and PBS only "
                        f"(use 'asyncflow-hpc run --backend radical --resource {name}')")
    methods = [m.lower() for m in entry.get("launch_methods", {}).get("order", [])]
    launcher = next((m for m in methods if m in LAUNCHERS), "srun" if scheduler == "slurm" else "mpiexec")
    cores = entry.get("cores_per_node")
    return Site(
        name=name, scheduler=scheduler, partition=entry.get("default_queue") or None,
        cores_per_node=cores if isinstance(cores, int) and cores > 0 else None,
        gpus_per_node=int(entry.get("gpus_per_node") or 0), launcher=launcher,
        prepare=tuple(entry.get("pre_bootstrap_0") or ()), rp_resource=name,
        description=" ".join(str(entry.get("description", "")).split()), source="radical.pilot",
    )


def find_site(name: str, site_files: Iterable[str | os.PathLike[str]] = (),
              env: Mapping[str, str] | None = None) -> Site:
    """The site called ``name``: from the site files, else RP's shipped resources."""
    sites = load_sites(site_files, env)
    if name in sites:
        return sites[name]
    if name in shipped_resources():
        return rp_site(name)
    known = sorted(sites)
    raise SiteError(f"unknown site {name!r}{did_you_mean(name, [*known, *shipped_resources()])}; "
                    f"sites defined here: {', '.join(known)} (see 'asyncflow-hpc sites list'), "
                    "or a RADICAL-Pilot resource name such as ornl.frontier")
