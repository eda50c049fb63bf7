"""File markers for explicit data dependencies (names kept from radical.asyncflow).

``InputFile("data.csv")`` and ``OutputFile("out.h5")`` tag task arguments as files. They are
plain path-like values: the local backend passes them through as paths, and a staging-aware
backend (RADICAL-Pilot) can turn them into staging directives.
"""

from __future__ import annotations

import os

__all__ = ["InputFile", "OutputFile"]


class _FileMarker(os.PathLike):
    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))


class InputFile(_FileMarker):
    """A file a task reads."""


class OutputFile(_FileMarker):
    """A file a task writes."""
