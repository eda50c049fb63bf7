"""On/off options given as an argument or an ``ASYNCFLOW_HPC_*`` environment variable."""

from __future__ import annotations

import os

from .errors import ConfigurationError

__all__ = ["env_flag"]


def env_flag(var: str, value: bool | None, *, default: bool) -> bool:
    """An on/off option: the argument when given, else the environment variable, else default."""
    if value is not None:
        if not isinstance(value, bool):
            raise ConfigurationError(f"{var.split('ASYNCFLOW_HPC_')[-1].lower()}= must be True "
                                     f"or False, got {value!r}")
        return value
    text = os.environ.get(var, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{var}={text!r} is not a switch: use 1/0, true/false, yes/no, on/off")
