"""How data notes and errors word things: counts of nouns, the kind of a cell, the gist of a library's exception."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# A cell's Python type → what a user calls it (a Parquet list column reads as numpy arrays).
_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    ((bool, np.bool_), "boolean"),
    ((int, float, np.number), "number"),
    (str, "text"),
    (Mapping, "object"),
    ((list, tuple, np.ndarray), "list"),
)


def plural(count: int, noun: str) -> str:
    """`count` and `noun`, with an "s" unless the count is one: `plural(1_275, "row")` is "1,275 rows"."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def kind_of(value: object, article: bool = False) -> str:
    """What a cell value is, in a user's words: "null", "boolean", "number", "text", "object",
    "list", else its type's name; with `article`, "a number", "an object" (null takes none)."""
    if value is None:
        return "null"
    kind = next((name for types, name in _KINDS if isinstance(value, types)), type(value).__name__)
    if not article:
        return kind
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def first_line(error: Exception, limit: int | None = None) -> str:
    """The first line of an exception's message (at most `limit` characters), else its type's name:
    enough to name what a library refused without its multi-line traceback text."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
