"""What may appear in ``task_description``, and the checks applied before a task runs.

One catalogue for every backend keeps a campaign portable: a key RADICAL-Pilot understands is
accepted on a laptop too (and ignored where it has no local meaning), while a typo fails the
task at once with a suggestion instead of being silently dropped.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = ["ENGINE_KEYS", "LOCAL_KEYS", "RADICAL_KEYS", "KNOWN_KEYS", "check_task_description",
           "suggest"]

#: keys the engine itself consumes
ENGINE_KEYS = frozenset({"shell", "timeout", "retries", "retry_backoff"})
#: keys the local backend honours
LOCAL_KEYS = frozenset({"cwd", "env", "environment", "sandbox", "pre_exec", "ranks", "stdin"})
#: RADICAL-Pilot TaskDescription fields (radical.pilot 1.103) that users may set
RADICAL_KEYS = frozenset({
    "arguments", "cleanup", "cores_per_rank", "cpu_process_type", "cpu_processes",
    "cpu_thread_type", "cpu_threads", "environment", "executable", "gpu_process_type",
    "gpu_processes", "gpu_thread_type", "gpu_threads", "gpu_type", "gpus_per_rank",
    "info_pattern", "input_staging", "lfs_per_process", "lfs_per_rank", "mem_per_process",
    "mem_per_rank", "metadata", "mode", "name", "named_env", "output_staging", "partition",
    "pilot", "post_exec", "post_launch", "pre_exec", "pre_exec_sync", "pre_launch", "priority",
    "ranks", "ranks_per_node", "restartable", "sandbox", "scheduler", "services", "slots",
    "stage_on_error", "startup_timeout", "stderr", "stdout", "tags", "threading_type",
    "timeout", "uid", "use_mpi",
})
KNOWN_KEYS = ENGINE_KEYS | LOCAL_KEYS | RADICAL_KEYS

_ALIASES = {"walltime": "timeout", "cores": "cores_per_rank", "gpus": "gpus_per_rank",
            "nprocs": "ranks", "np": "ranks", "workdir": "cwd", "cmd": "executable",
            "retry": "retries"}


def suggest(key: str, known: frozenset[str] | set[str], aliases: Mapping[str, str] = _ALIASES) -> str:
    """' (did you mean 'x'?)' for a mistyped key, or ''."""
    if key in aliases and aliases[key] in known:
        return f" (did you mean {aliases[key]!r}?)"
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _number(key: str, value: Any, *, integer: bool = False, minimum: float = 0) -> None:
    ok_type = int if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value)
            or value < minimum):
        kind = "an integer" if integer else "a number"
        raise ConfigurationError(
            f"task_description[{key!r}] must be {kind} >= {minimum}, got {value!r}")


def check_task_description(td: Mapping[str, Any], task: str = "") -> None:
    """Raise :class:`ConfigurationError` naming the first bad key or value in ``td``."""
    where = f" of task {task!r}" if task else ""
    for key, value in td.items():
        if not isinstance(key, str):
            raise ConfigurationError(f"task_description{where} has a non-string key {key!r}")
        if key not in KNOWN_KEYS:
            raise ConfigurationError(
                f"unknown task_description key {key!r}{where}{suggest(key, KNOWN_KEYS)}")
        if key == "shell" and not isinstance(value, bool):
            raise ConfigurationError(f"task_description['shell']{where} must be True or False")
        elif key == "timeout" and value is not None:
            _number(key, value)
            if value == 0:
                raise ConfigurationError(f"task_description['timeout']{where} must be > 0")
        elif key in ("retries", "ranks", "cores_per_rank") and value is not None:
            _number(key, value, integer=True, minimum=1 if key != "retries" else 0)
        elif key == "retry_backoff" and value is not None:
            _number(key, value)
        elif key in ("cwd", "sandbox") and value is not None:
            if not isinstance(value, (str, os.PathLike)):
                raise ConfigurationError(
                    f"task_description[{key!r}]{where} must be a path, got {type(value).__name__}")
        elif key in ("env", "environment") and value is not None:
            if not isinstance(value, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in value.items()):
                raise ConfigurationError(
                    f"task_description[{key!r}]{where} must map names to strings, got {value!r}")
        elif key == "pre_exec" and value is not None:
            if isinstance(value, str) or not all(isinstance(c, str) for c in value):
                raise ConfigurationError(
                    f"task_description['pre_exec']{where} must be a list of shell commands")
