"""The environment a child process needs to import this very package.

The package may be importable here only through a path the program added itself (a source
checkout, ``sys.path`` edits); a child process or a batch job finds it through ``PYTHONPATH``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["package_root", "with_package_on_path"]


def package_root() -> str:
    """The folder that holds the ``asyncflow_hpc`` package."""
    return str(Path(__file__).resolve().parents[1])


def with_package_on_path(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) with :func:`package_root` first on PYTHONPATH."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = os.pathsep.join([package_root(), *filter(None, [out.get("PYTHONPATH")])])
    return out
