"""Futures and file markers inside a task's arguments.

A call's arguments may hold futures (dependencies) and file markers, also inside lists,
tuples, sets and dicts. The engine finds them when the task is called (:func:`find_futures`),
places file markers in the task's directory (:func:`place_markers`) and, once every
dependency has settled, replaces each future by its result (:func:`resolve`), rebuilding
only the containers that held one.
"""

from __future__ import annotations

import asyncio
import collections
import os
import shlex
from typing import Any

from .files import _FileMarker
from .tasks import TaskRecord

# argument types that can never hold a future: skipped without a look inside
_ATOMS = frozenset({int, float, str, bytes, bool, type(None), complex})
_CONTAINERS = (list, tuple, set, frozenset, dict, collections.deque)


def find_futures(args: tuple, kwargs: dict) -> tuple[list[asyncio.Future] | None, list | None]:
    """Futures (each once) and file markers in the arguments, also inside containers."""
    found: list[asyncio.Future] | None = None
    markers: list | None = None
    seen: set[int] | None = None
    stack: list[Any] = []
    for a in args:
        if type(a) not in _ATOMS:
            stack.append(a)
    if kwargs:
        for a in kwargs.values():
            if type(a) not in _ATOMS:
                stack.append(a)
    visited: set[int] | None = None  # containers already searched (a structure may hold itself)
    while stack:
        a = stack.pop()
        if isinstance(a, asyncio.Future):
            if seen is None:
                seen, found = set(), []
            if id(a) not in seen:
                seen.add(id(a))
                found.append(a)  # type: ignore[union-attr]
        elif isinstance(a, _CONTAINERS):
            if visited is None:
                visited = set()
            elif id(a) in visited:
                continue
            visited.add(id(a))
            if isinstance(a, dict):
                for k in a:  # a future as a key is a dependency too
                    if isinstance(k, asyncio.Future):
                        stack.append(k)
                items = a.values()
            else:
                items = a
            for x in items:
                if type(x) not in _ATOMS:
                    stack.append(x)
        elif isinstance(a, _FileMarker):
            if markers is None:
                markers = []
            markers.append(a)
    return found, markers


def place_markers(obj: Any, task_dir: str) -> Any:
    """The arguments with every file marker pointing into the task's directory."""
    t = type(obj)
    if t in _ATOMS:
        return obj
    if isinstance(obj, _FileMarker):
        return obj._placed(task_dir)
    if t is tuple:
        return tuple(place_markers(x, task_dir) for x in obj)
    if t is list:
        return [place_markers(x, task_dir) for x in obj]
    if t is dict:
        return {k: place_markers(v, task_dir) for k, v in obj.items()}
    return obj


def resolve(obj: Any, problems: list) -> Any:
    """Replace futures by their results, keeping container types; collect failed inputs.

    A container subclass is rebuilt faithfully (a copy of the object with its items
    replaced, so its own ``__init__``, ``default_factory`` or ``maxlen`` survive), or refused
    with a TypeError naming the type: never passed on with futures still inside.
    """
    t = type(obj)
    if t in _ATOMS:
        return obj
    if isinstance(obj, asyncio.Future):
        if obj.cancelled():
            problems.append((future_name(obj), None))
            return None
        exc = obj.exception()
        if exc is not None:
            problems.append((future_name(obj), exc))
            return None
        return obj.result()
    if t is tuple:
        return tuple(resolve(x, problems) for x in obj)
    if t is list:
        return [resolve(x, problems) for x in obj]
    if t is dict:
        return {resolve(k, problems) if isinstance(k, asyncio.Future) else k:
                resolve(v, problems) for k, v in obj.items()}
    if t is set or t is frozenset:
        return t(resolve(x, problems) for x in obj)
    if isinstance(obj, _CONTAINERS):
        return rebuild(obj, problems)
    return obj


def rebuild(obj: Any, problems: list) -> Any:
    """A container subclass (or deque) with its items resolved; see :func:`resolve`."""
    import copy

    t = type(obj)
    if not holds_future(obj):
        return obj  # nothing to replace: hand it over as given
    try:
        if isinstance(obj, tuple):
            items = [resolve(x, problems) for x in obj]
            new = t(*items) if hasattr(obj, "_fields") else t(items)
            if type(new) is t and len(new) == len(obj) and all(
                    a is b for a, b in zip(new, items, strict=False)):
                return new
        elif isinstance(obj, frozenset):
            items = [resolve(x, problems) for x in obj]
            new = t(items)
            if type(new) is t and len(new) == len(set(map(id, items))):
                return new
        else:
            new = copy.copy(obj)  # keeps the type, attributes, default_factory, maxlen
            if type(new) is t:
                if isinstance(obj, dict):
                    new.clear()  # the type's own methods: OrderedDict keeps its order links
                    for k, v in obj.items():
                        key = resolve(k, problems) if isinstance(k, asyncio.Future) else k
                        new[key] = resolve(v, problems)
                    return new
                if isinstance(obj, list):
                    list.__setitem__(new, slice(None), [resolve(x, problems) for x in obj])
                    return new
                if isinstance(obj, set):
                    set.clear(new)
                    set.update(new, (resolve(x, problems) for x in obj))
                    return new
                if isinstance(obj, collections.deque):
                    new.clear()
                    new.extend(resolve(x, problems) for x in obj)
                    return new
    except RecursionError:
        raise
    except Exception as exc:  # noqa: BLE001 - reported below, naming the type
        raise TypeError(f"futures inside a {t.__module__}.{t.__qualname__} cannot be replaced "
                        f"by their results ({type(exc).__name__}: {exc}); pass them in a "
                        "list, tuple, set or dict") from exc
    raise TypeError(f"futures inside a {t.__module__}.{t.__qualname__} cannot be replaced by "
                    "their results faithfully; pass them in a list, tuple, set or dict")


def holds_future(obj: Any) -> bool:
    found, _ = find_futures((obj,), {})
    return bool(found)


def safe_text(obj: object) -> str:
    """``str(obj)``, even for an object whose ``__str__`` raises."""
    try:
        return str(obj)
    except Exception:  # noqa: BLE001
        try:
            return f"<{type(obj).__name__} whose str() failed>"
        except Exception:  # noqa: BLE001
            return "<unprintable>"


def future_name(fut: asyncio.Future) -> str:
    task = getattr(fut, "task", None)
    if isinstance(task, TaskRecord):
        return task.name
    if isinstance(fut, asyncio.Task):
        return fut.get_name()
    return repr(fut)


def command_from(produced: Any, shell: bool, name: str) -> list[str] | str:
    if isinstance(produced, (list, tuple)):
        if not produced:
            raise ValueError(f"executable task {name!r} returned an empty command")
        argv = [os.fspath(x) if isinstance(x, os.PathLike) else str(x) for x in produced]
        return shlex.join(argv) if shell else argv
    if not isinstance(produced, str):
        raise TypeError(
            f"executable task {name!r} must return a command string (or argv list), got "
            f"{type(produced).__name__}")
    if not produced.strip():
        raise ValueError(f"executable task {name!r} returned an empty command")
    if shell:
        return produced
    argv = shlex.split(produced)
    if not argv:
        raise ValueError(f"executable task {name!r} returned an empty command")
    return argv
