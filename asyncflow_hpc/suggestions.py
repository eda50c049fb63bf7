"""The one "did you mean" helper behind every error about a mistyped key or name."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping

__all__ = ["did_you_mean"]


def did_you_mean(word: str, known: Collection[str], aliases: Mapping[str, str] | None = None,
                 exclude: Collection[str] = ()) -> str:
    """``" (did you mean 'x'?)"`` for a mistyped ``word``, or ``""``.

    ``aliases`` maps other spellings people reach for to the name they mean; a typo of an
    alias (``coress``) still leads to the real name. Names in ``exclude`` are never proposed.
    """
    aliases = {k: v for k, v in (aliases or {}).items() if v not in exclude}
    if word in aliases:
        return f" (did you mean {aliases[word]!r}?)"
    pool = sorted({k for k in known if k not in exclude} | set(aliases))
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6) or \
        difflib.get_close_matches(word.lower(), pool, n=1, cutoff=0.6)
    if not close:
        return ""
    return f" (did you mean {aliases.get(close[0], close[0])!r}?)"
