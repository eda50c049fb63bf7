"""Backend registry: names users type (``ASYNCFLOW_HPC_BACKEND``, ``--backend``) -> classes.

Backends are imported lazily, so ``import asyncflow_hpc`` never pays for RADICAL-Pilot. A new
backend is one module plus one line here.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from ..errors import ConfigurationError
from .base import ExecutionBackend, Reporter

__all__ = ["BACKENDS", "ExecutionBackend", "Reporter", "backend_class", "create_backend",
           "create_backend_from_env"]

#: name -> "module:Class"
BACKENDS: dict[str, str] = {
    "local": "asyncflow_hpc.backends.local:LocalExecutionBackend",
    "dryrun": "asyncflow_hpc.backends.noop:NoopExecutionBackend",
    "noop": "asyncflow_hpc.backends.noop:NoopExecutionBackend",
    "radical": "asyncflow_hpc.backends.radical:RadicalPilotBackend",
}

ENV_BACKEND = "ASYNCFLOW_HPC_BACKEND"


def backend_class(name: str) -> type[ExecutionBackend]:
    """The class registered under ``name``; a clear error for unknown names."""
    key = name.strip().lower()
    if key not in BACKENDS:
        raise ConfigurationError(
            f"unknown backend {name!r}; choose one of: {', '.join(sorted(BACKENDS))}")
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
    """The default backend: ``$ASYNCFLOW_HPC_BACKEND`` (``local`` when unset).

    For ``radical``, a site (``$ASYNCFLOW_HPC_SITE``, set by ``asyncflow-hpc run --site`` or
    ``--in-allocation``) supplies the resource name, the generated RP resource config and the
    pilot's nodes, runtime, queue and project (see
    :func:`asyncflow_hpc.hpc.resources.radical_backend_options`); without a site,
    ``$ASYNCFLOW_HPC_RESOURCE`` names an RP resource. A site with any other backend is
    ignored (inside an allocation ``--backend local`` runs tasks as the job's subprocesses).
    """
    name = os.environ.get(ENV_BACKEND, "").strip() or "local"
    if name.lower() == "radical":
        options: dict[str, Any] = {}
        if work_dir is not None:
            options["work_dir"] = work_dir
        if os.environ.get("ASYNCFLOW_HPC_SITE", "").strip():
            from ..hpc.resources import radical_backend_options

            options.update(radical_backend_options())
            resource = os.environ.get("ASYNCFLOW_HPC_RESOURCE", "").strip()
            if resource and resource != options.get("resource"):
                raise ConfigurationError(
                    f"ASYNCFLOW_HPC_SITE={os.environ['ASYNCFLOW_HPC_SITE']!r} and "
                    f"ASYNCFLOW_HPC_RESOURCE={resource!r} both name where to run: give one "
                    "(--site or --resource)")
        else:
            resource = os.environ.get("ASYNCFLOW_HPC_RESOURCE")
            if resource:
                options["resource"] = resource
        return await create_backend(name, **options)
    return await create_backend(name)
