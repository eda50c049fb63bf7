"""``task_description``: the engine's own keys, and the value checks backends share.

The engine checks the keys it consumes itself (``shell``, ``timeout``, ``retries``,
``retry_backoff``) and then asks the task's backend to check the rest
(:meth:`ExecutionBackend.check_task_description`): each backend owns its keys. The
helpers below keep the wording of errors the same across backends.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError
from .suggestions import did_you_mean

__all__ = ["ENGINE_KEYS", "check_commands", "check_engine_keys", "check_environment", "check_values",
           "check_number", "check_path", "unknown_key"]

#: keys the engine itself consumes (never forwarded to a backend's task)
ENGINE_KEYS = frozenset({"shell", "timeout", "retries", "retry_backoff"})


def _where(task: str) -> str:
    return f" of task {task!r}" if task else ""


def unknown_key(key: str, known: frozenset[str] | set[str], task: str = "", backend: str = "",
                aliases: Mapping[str, str] | None = None) -> ConfigurationError:
    """The error for a key no one consumes, with a suggestion among ``known``."""
    on = f" on backend {backend!r}" if backend else ""
    hint = did_you_mean(key, set(known) | ENGINE_KEYS,
                        {k: v for k, v in (aliases or {}).items()
                         if v in known or v in ENGINE_KEYS})
    return ConfigurationError(f"unknown task_description key {key!r}{_where(task)}{on}{hint}")


def check_number(key: str, value: Any, task: str = "", *, integer: bool = False,
                 minimum: float = 0) -> None:
    """``value`` is a finite number (an integer if ``integer``) >= ``minimum``."""
    ok_type = int if integer else (int, float)
    if (isinstance(value, bool) or not isinstance(value, ok_type) or not math.isfinite(value)
            or value < minimum):
        kind = "an integer" if integer else "a number"
        raise ConfigurationError(
            f"task_description[{key!r}]{_where(task)} must be {kind} >= {minimum}, "
            f"got {value!r}")


def check_path(key: str, value: Any, task: str = "") -> None:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(
            f"task_description[{key!r}]{_where(task)} must be a path, got "
            f"{type(value).__name__}")


def check_environment(key: str, value: Any, task: str = "") -> None:
    if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in value.items()):
        raise ConfigurationError(
            f"task_description[{key!r}]{_where(task)} must map names to strings, got {value!r}")


def check_commands(key: str, value: Any, task: str = "") -> None:
    if isinstance(value, str) or not all(isinstance(c, str) for c in value):
        raise ConfigurationError(
            f"task_description[{key!r}]{_where(task)} must be a list of shell commands")


def check_engine_keys(td: Mapping[str, Any], task: str = "") -> None:
    """Raise :class:`ConfigurationError` for a non-string key or a bad engine value."""
    for key, value in td.items():
        if not isinstance(key, str):
            raise ConfigurationError(f"task_description{_where(task)} has a non-string key "
                                     f"{key!r}")
        if key not in ENGINE_KEYS or value is None:
            continue
        if key == "shell":
            if not isinstance(value, bool):
                raise ConfigurationError(
                    f"task_description['shell']{_where(task)} must be True or False")
        elif key == "timeout":
            check_number(key, value, task)
            if value == 0:
                raise ConfigurationError(f"task_description['timeout']{_where(task)} must be > 0")
        elif key == "retries":
            check_number(key, value, task, integer=True)
        else:
            check_number(key, value, task)


def check_values(td: Mapping[str, Any], task: str = "") -> None:
    """The values of the common keys (ranks, cores, working folder, environment, pre_exec),
    for the backends that give them the same meaning."""
    for key, value in td.items():
        if value is None:
            continue
        if key in ("ranks", "cores_per_rank"):
            check_number(key, value, task, integer=True, minimum=1)
        elif key in ("cwd", "sandbox"):
            check_path(key, value, task)
        elif key in ("env", "environment"):
            check_environment(key, value, task)
        elif key == "pre_exec":
            check_commands(key, value, task)
