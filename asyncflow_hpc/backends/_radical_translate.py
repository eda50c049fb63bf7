"""Pure helpers of the RADICAL-Pilot backend: key validation, spec translation, remote calls.

Nothing here imports radical.pilot, so the checks run (and fail early, with a suggestion)
before RP is loaded. The backend passes the set of keys RP's ``TaskDescription`` accepts.
"""

from __future__ import annotations

import base64
import builtins
import difflib
import os
import re
import types
from collections.abc import Collection, Mapping
from typing import Any

from ..errors import ConfigurationError
from ..tasks import TaskKind, TaskSpec

__all__ = [
    "PILOT_KEYS", "RAPTOR_KEYS", "suggest", "validate_pilot_keywords", "validate_raptor",
    "task_description", "pack_call", "unpack_result", "REMOTE_CALL", "rp_uid_for",
]

# ----------------------------------------------------------------------------- suggestions

def suggest(key: str, known: Collection[str], aliases: Mapping[str, str] | None = None,
            exclude: Collection[str] = ()) -> str:
    """`` (did you mean 'x'?)`` for a mistyped key, or ``''``.

    Aliases are matched too, so a typo of an alias (``coress``) still leads to the real key.
    """
    aliases = aliases or {}
    if key in aliases:
        return f" (did you mean {aliases[key]!r}?)"
    pool = sorted({k for k in known if k not in exclude} | set(aliases))
    close = difflib.get_close_matches(key.lower(), pool, n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {aliases.get(close[0], close[0])!r}?)"


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
            hint = suggest(key, PILOT_KEYS, PILOT_ALIASES)
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


def validate_raptor(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = dict(cfg or {})
    for key, value in cfg.items():
        if key not in RAPTOR_KEYS:
            raise ConfigurationError(
                f"unknown raptor= key {key!r}{suggest(key, RAPTOR_KEYS)}; "
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


# ----------------------------------------------------------------------------- task descriptions

#: consumed by the engine; never forwarded
ENGINE_KEYS = frozenset({"shell", "timeout", "retries", "retry_backoff"})
#: the backend sets these itself; a user value would break the translation
RESERVED_KEYS = frozenset({
    "uid", "mode", "executable", "arguments", "function", "args", "kwargs", "code",
    "command", "method", "raptor_id", "scheduler", "raptor_class", "raptor_file",
    "worker_class", "worker_file", "slots",
})
#: portable names -> RP names
RENAMED = {"cwd": "sandbox", "env": "environment"}
#: common mistakes -> the RP key meant
TD_ALIASES = {
    "cores": "cores_per_rank", "gpus": "gpus_per_rank", "nprocs": "ranks", "np": "ranks",
    "processes": "ranks", "walltime": "timeout", "workdir": "sandbox", "threads": "cores_per_rank",
    "env_vars": "environment", "gpus_per_task": "gpus_per_rank", "ntasks": "ranks",
    "cpus": "cores_per_rank", "cpus_per_task": "cores_per_rank", "cpus_per_rank": "cores_per_rank",
    "nodes": "ranks", "mpi": "use_mpi", "workdir_path": "sandbox",
}


def task_description(spec: TaskSpec, accepted: Collection[str]) -> dict[str, Any]:
    """The user part of an RP TaskDescription for ``spec`` (no uid, mode, executable).

    ``accepted`` is the key set of ``rp.TaskDescription``. Raises ConfigurationError naming
    the first key RP would not understand.
    """
    out: dict[str, Any] = {}
    for key, value in spec.description.items():
        if key in ENGINE_KEYS:
            continue
        name = RENAMED.get(key, key)
        if key == "stdin":
            raise ConfigurationError(
                f"task_description['stdin'] of task {spec.name!r} is not supported on "
                "RADICAL-Pilot; use shell=True with a redirection, or input_staging")
        if name in RESERVED_KEYS:
            raise ConfigurationError(
                f"task_description[{key!r}] of task {spec.name!r} is set by asyncflow-hpc "
                "from the task itself and cannot be given")
        if name not in accepted:
            raise ConfigurationError(
                f"unknown task_description key {key!r} of task {spec.name!r} for "
                f"RADICAL-Pilot{suggest(key, accepted, TD_ALIASES, RESERVED_KEYS)}")
        if value is None:
            continue
        if name == "environment":
            if not isinstance(value, Mapping):
                raise ConfigurationError(
                    f"task_description[{key!r}] of task {spec.name!r} must be a mapping")
            env = dict(out.get("environment") or {})
            env.update({str(k): str(v) for k, v in value.items()})
            value = env
        elif name == "sandbox":
            value = os.path.abspath(os.fspath(value))
        elif name in ("pre_exec", "post_exec", "pre_launch", "post_launch") and isinstance(
                value, str):
            value = [value]
        out[name] = value
    if spec.timeout and "timeout" not in out:
        out["timeout"] = float(spec.timeout)
    if "name" not in out and spec.name:
        out["name"] = str(spec.name)
    return out


def executable_fields(spec: TaskSpec) -> tuple[str, list[str]]:
    """(executable, arguments) of an EXECUTABLE spec; shell commands run under /bin/sh -c."""
    cmd = spec.command
    if spec.shell or isinstance(cmd, str):
        text = cmd if isinstance(cmd, str) else " ".join(cmd or [])
        if not text.strip():
            raise ValueError(f"task {spec.name!r} produced an empty command")
        return "/bin/sh", ["-c", text]
    argv = [os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in (cmd or [])]
    if not argv:
        raise ValueError(f"task {spec.name!r} produced an empty command")
    return argv[0], argv[1:]


_UID_BAD = re.compile(r"[^A-Za-z0-9._-]")


def rp_uid_for(spec_uid: str, taken: Collection[str]) -> str:
    """An RP task uid for ``spec_uid``: the same when possible (it names the sandbox folder).

    RP refuses a uid twice per task manager, and retries/resubmissions reuse the spec uid,
    so later attempts get a ``.rN`` suffix.
    """
    base = _UID_BAD.sub("_", spec_uid)[:120] or "task"
    if base not in taken:
        return base
    n = 1
    while f"{base}.r{n}" in taken:
        n += 1
    return f"{base}.r{n}"


# ----------------------------------------------------------------------------- function tasks

_OK, _ERR = "ok", "err"


def _remote_call(payload: str) -> str:  # pragma: no cover - runs inside the raptor worker
    # Self-contained on purpose (see REMOTE_CALL): only the standard library and dill, which
    # every RADICAL-Pilot installation has. Results and exceptions travel pickled, so tuples,
    # numpy arrays and user exception classes survive RP's msgpack transport unchanged.
    import asyncio
    import base64
    import inspect
    import threading
    import traceback

    import dill

    def dump(obj: object) -> str:
        return base64.b64encode(dill.dumps(obj)).decode("ascii")

    try:
        func, args, kwargs = dill.loads(base64.b64decode(payload))
        if inspect.iscoroutinefunction(func):
            # the worker calls us inside its own running loop: a coroutine gets a fresh
            # loop in a helper thread instead of nesting asyncio.run
            box: dict = {}

            def run() -> None:
                try:
                    box["v"] = asyncio.run(func(*args, **kwargs))
                except BaseException as e:  # noqa: BLE001
                    box["e"] = e

            t = threading.Thread(target=run, name="asyncflow-hpc-async-task")
            t.start()
            t.join()
            if "e" in box:
                raise box["e"]
            value = box["v"]
        else:
            value = func(*args, **kwargs)
        return dump(("ok", value))
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the client
        tb = traceback.format_exc()
        try:
            blob = dump(exc)
        except Exception:  # unpicklable exception: send its text only
            blob = None
        return dump(("err", blob, f"{type(exc).__name__}: {exc}", tb))


#: ``_remote_call`` rebuilt outside any importable module, so dill ships it by value: the
#: raptor worker needs neither asyncflow-hpc nor this file to run it.
REMOTE_CALL = types.FunctionType(
    _remote_call.__code__, {"__builtins__": builtins, "__name__": "__asyncflow_remote__"},
    "asyncflow_remote_call")
REMOTE_CALL.__module__ = "__asyncflow_remote__"
REMOTE_CALL.__qualname__ = "asyncflow_remote_call"


def pack_call(spec: TaskSpec) -> str:
    """Pickle a FUNCTION spec's call for REMOTE_CALL."""
    import dill

    assert spec.kind is TaskKind.FUNCTION and spec.function is not None
    call = (spec.function, tuple(spec.args), dict(spec.kwargs))
    try:
        # recurse: functions from __main__ carry the globals they use, not the whole script
        data = dill.dumps(call, recurse=True)
    except Exception:
        data = dill.dumps(call)
    return base64.b64encode(data).decode("ascii")


class RemoteError(Exception):
    """A function task's exception that could not be sent back as itself."""


def unpack_result(value: Any) -> tuple[bool, Any]:
    """(True, value) or (False, exception) from REMOTE_CALL's return value."""
    import dill

    if not isinstance(value, str):
        return True, value  # not ours (should not happen); hand it over as is
    try:
        obj = dill.loads(base64.b64decode(value))
    except Exception as exc:
        return False, RemoteError(f"cannot unpickle the function task's result: {exc!r}")
    if obj[0] == _OK:
        return True, obj[1]
    _, blob, text, tb = obj
    exc: BaseException | None = None
    if blob is not None:
        try:
            exc = dill.loads(base64.b64decode(blob))
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RemoteError(text)
    try:
        exc.add_note(f"remote traceback (RADICAL-Pilot raptor worker):\n{tb.rstrip()}")
    except Exception:
        pass
    return False, exc
