"""Files between tasks: the markers users write, and the plan a backend carries out.

``InputFile("data.csv")`` and ``OutputFile("out.h5")`` tag task arguments as files (names and
attributes kept from radical.asyncflow: ``.filename``, ``.filepath``). A task that declares
files, or that depends on a task that declared outputs (``implicit_data=True``), runs in its
own directory, ``{work_dir}/{engine uid}/{task uid}``. The engine decides *what* goes there
(a :class:`FilePlan`); the backend carries it out: the local backend with :func:`stage_in` and
:func:`missing_outputs`, RADICAL-Pilot with staging directives.

Inside the body a marker is the file's absolute path in the task's directory
(``open(out)``, ``f"sort {inp} > {out}"``); ``.filename`` is its bare name.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
import urllib.request
from pathlib import Path

__all__ = ["InputFile", "OutputFile", "FilePlan", "StageIn", "stage_in", "missing_outputs",
           "URL_SCHEMES"]

#: schemes an InputFile may name to be staged in from outside the campaign
URL_SCHEMES = frozenset({"file", "http", "https", "ftp", "ftps", "sftp", "s3", "gs", "azure",
                         "r2", "data"})


class _FileMarker(os.PathLike):
    __slots__ = ("path", "filename")

    def __init__(self, path: str | os.PathLike) -> None:
        if isinstance(path, _FileMarker):
            path = path.path
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{type(self).__name__} needs a path or name, got "
                            f"{type(path).__name__}")
        text = os.fspath(path)
        if not isinstance(text, str) or not text:
            raise ValueError(f"{type(self).__name__} needs a non-empty path")
        self.path = text
        name = os.path.basename(urllib.parse.urlparse(text).path if _is_url(text) else text)
        if not name or name in (".", ".."):
            raise ValueError(f"{type(self).__name__}({text!r}) does not name a file")
        self.filename = name

    @property
    def filepath(self) -> Path:
        return Path(self.path)

    def _placed(self, task_dir: str) -> _FileMarker:
        """The same marker, pointing at its place in a task's directory."""
        new = object.__new__(type(self))
        new.path = os.path.join(task_dir, self.filename)
        new.filename = self.filename
        return new

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

    def __reduce__(self):
        return (_rebuild_marker, (type(self), self.path, self.filename))


def _rebuild_marker(cls: type, path: str, filename: str) -> _FileMarker:
    m = object.__new__(cls)
    m.path, m.filename = path, filename
    return m


class InputFile(_FileMarker):
    """A file a task reads: an earlier task's ``OutputFile`` of the same name, a path, or a URL."""

    @property
    def is_url(self) -> bool:
        return _is_url(self.path)


class OutputFile(_FileMarker):
    """A file a task writes into its directory; a dependent task gets it linked into its own."""


def _is_url(text: str) -> bool:
    scheme = urllib.parse.urlparse(text).scheme
    return len(scheme) > 1 and scheme in URL_SCHEMES


class StageIn:
    """One input: ``source`` (an absolute path or URL) placed as ``name`` in the task's dir.

    ``action`` is ``"link"`` (another task's output: same file system, no copy) or ``"copy"``
    (a file from outside the campaign: the task gets its own copy).
    """

    __slots__ = ("source", "name", "action")

    def __init__(self, source: str, name: str, action: str) -> None:
        self.source, self.name, self.action = source, name, action

    def __repr__(self) -> str:
        return f"StageIn({self.source!r} -> {self.name!r}, {self.action})"

    def __reduce__(self):
        return (StageIn, (self.source, self.name, self.action))


class FilePlan:
    """Where a task runs and which files go in and must come out."""

    __slots__ = ("task_dir", "inputs", "outputs")

    def __init__(self, task_dir: str, inputs: list[StageIn], outputs: list[str]) -> None:
        self.task_dir = task_dir
        self.inputs = inputs
        self.outputs = outputs

    def __repr__(self) -> str:
        return f"FilePlan({self.task_dir!r}, inputs={self.inputs!r}, outputs={self.outputs!r})"

    def __reduce__(self):
        return (FilePlan, (self.task_dir, self.inputs, self.outputs))


def stage_in(plan: FilePlan) -> None:
    """Create the task's directory (0700) and place its inputs there (on this machine)."""
    from .safe_files import private_dir, safe_open

    private_dir(plan.task_dir)
    for item in plan.inputs:
        target = os.path.join(plan.task_dir, item.name)
        if os.path.lexists(target):
            os.unlink(target)  # a retry stages again
        if item.action == "link":
            if not os.path.exists(item.source):
                raise FileNotFoundError(f"input {item.name!r}: {item.source} does not exist")
            os.symlink(item.source, target)
            continue
        # a copy: a new private file (no link followed), filled from a path or a URL
        fd = safe_open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as dst:
            if _is_url(item.source):
                parsed = urllib.parse.urlparse(item.source)
                if parsed.scheme == "file":
                    with open(urllib.parse.unquote(parsed.path), "rb") as src:
                        shutil.copyfileobj(src, dst)
                else:
                    with urllib.request.urlopen(item.source) as src:
                        shutil.copyfileobj(src, dst)
            else:
                with open(item.source, "rb") as src:
                    shutil.copyfileobj(src, dst)


def missing_outputs(plan: FilePlan) -> list[str]:
    """Declared outputs that are not in the task's directory."""
    return [name for name in plan.outputs
            if not os.path.exists(os.path.join(plan.task_dir, name))]
