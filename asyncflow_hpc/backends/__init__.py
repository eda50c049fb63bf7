"""Backend registry: names users type (``ASYNCFLOW_HPC_BACKEND``, ``--backend``) -> classes.

Backends are imported lazily, so ``import asyncflow_hpc`` never pays for RADICAL-Pilot. A new
backend is one module plus one line here.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..errors import ConfigurationError
from ..suggestions import did_you_mean
from .base import ExecutionBackend, Reporter

__all__ = ["BACKENDS", "ExecutionBackend", "Reporter", "backend_class", "create_backend",
           "create_backend_from_env", "require_backend"]

#: name -> "module:Class"
BACKENDS: dict[str, str] = {
    "local": "asyncflow_hpc.backends.local:LocalExecutionBackend",
    "dryrun": "asyncflow_hpc.backends.noop:NoopExecutionBackend",
    "noop": "asyncflow_hpc.backends.noop:NoopExecutionBackend",
    "radical": "asyncflow_hpc.backends.radical:RadicalPilotBackend",
}

ENV_BACKEND = "ASYNCFLOW_HPC_BACKEND"
#: name -> the module a backend loads only when it starts (its optional extra)
NEEDS: dict[str, str] = {"radical": "radical.pilot"}


def require_backend(name: str) -> None:
    """Raise :class:`ConfigurationError` (one line, with the install command) when backend
    ``name`` is unknown or the package it runs on is not installed."""
    backend_class(name)
    module = NEEDS.get(name.strip().lower())
    if module is None:
        return
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is missing
        found = False
    if not found:
        raise ConfigurationError(
            f"backend {name!r} needs {module}, which is not installed here; "
            f"pip install 'asyncflow-hpc[{name.strip().lower()}]'")


def backend_class(name: str) -> type[ExecutionBackend]:
    """The class registered under ``name``; a clear error for unknown names."""
    key = name.strip().lower()
    if key not in BACKENDS:
        raise ConfigurationError(
            f"unknown backend {name!r}{did_you_mean(key, BACKENDS)}; choose one of: "
            f"{', '.join(sorted(BACKENDS))}")
    module, _, cls = BACKENDS[key].partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"backend {name!r} needs a package that is not installed ({exc}); "
            f"try: pip install 'asyncflow-hpc[{key}]'") from exc
    return getattr(mod, cls)


async def create_backend(name: str, **options: Any) -> ExecutionBackend:
    """Construct and start the backend registered under ``name``."""
    cls = backend_class(name)
    backend = cls(**options)
    await backend.start()
    return backend


async def create_backend_from_env(work_dir: Any = None) -> ExecutionBackend:
    """The default backend: ``$ASYNCFLOW_HPC_BACKEND`` (``local`` when unset), built by its
    class from the environment (:meth:`ExecutionBackend.from_env`) and started.

    ``work_dir`` is the engine's explicit work directory, for backends that keep files.
    """
    name = os.environ.get(ENV_BACKEND, "").strip() or "local"
    backend = backend_class(name).from_env(work_dir)
    await backend.start()
    return backend
