"""Read the resource configs that RADICAL-Pilot ships, without importing RADICAL-Pilot.

Users name RP's shipped resources (``ornl.frontier``, ``anl.polaris``) as sites. Knowing what
those entries say (scheduler, queue, cores per node) lets ``sites show`` and ``submit`` work on
a login node in a fraction of a second, instead of paying for ``import radical.pilot``.
RP's files are JSON with ``#`` comment lines, so they are read here with those lines dropped.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

__all__ = ["read_commented_json", "shipped_config_dir", "shipped_resources"]


def read_commented_json(path: Path) -> dict[str, Any]:
    """JSON whose lines may start with ``#`` (RP's config style)."""
    text = path.read_text(encoding="utf-8")
    kept = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    data = json.loads("\n".join(kept))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def shipped_config_dir() -> Path | None:
    """``radical/pilot/configs`` of the installed RADICAL-Pilot, or None when it is absent."""
    try:
        spec = importlib.util.find_spec("radical.pilot")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        configs = Path(location) / "configs"
        if configs.is_dir():
            return configs
    return None


@functools.lru_cache(maxsize=1)
def shipped_resources() -> dict[str, dict[str, Any]]:
    """``{"ornl.frontier": {...entry...}, ...}`` for every resource RP ships (empty without RP)."""
    configs = shipped_config_dir()
    out: dict[str, dict[str, Any]] = {}
    if configs is None:
        return out
    for path in sorted(configs.glob("resource_*.json")):
        site = path.stem[len("resource_"):]
        try:
            entries = read_commented_json(path)
        except (OSError, ValueError):
            continue  # one unreadable file must not hide the other 60 resources
        for label, entry in entries.items():
            if isinstance(entry, dict):
                out[f"{site}.{label}"] = entry
    return out
