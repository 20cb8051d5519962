"""How data notes and errors word things: counts of nouns, the gist of a library's exception."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """`count` and `noun`, with an "s" unless the count is one: `plural(1_275, "row")` is "1,275 rows"."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def first_line(error: Exception, limit: int | None = None) -> str:
    """The first line of an exception's message (at most `limit` characters), else its type's name:
    enough to name what a library refused without its multi-line traceback text."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
