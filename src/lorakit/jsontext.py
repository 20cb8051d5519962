"""JSON text from a user's file, every way it can fail being one `json.JSONDecodeError`.

`json.loads` fails in two more ways on text anyone can write: arrays or objects nested about a
thousand deep raise RecursionError, and an integer of more than 4,300 digits raises a bare
ValueError (CPython's guard against quadratic parsing). Readers catch the one error and name the
file and line, as for any other syntax error.
"""

from __future__ import annotations

import json
import re
from typing import Any

_LONG_INTEGER = re.compile(r"\d{4301,}")
# Nesting the message calls too deep: Python's default recursion limit, which the parser hits first.
_DEEP = 1_000


def loads(text: str) -> Any:
    """`json.loads(text)`.

    Raises:
        json.JSONDecodeError: `text` is not JSON, nests too deeply for the parser, or holds an
            integer too long to convert; `msg` says which, `pos` where (where known).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("arrays or objects nested too deeply", text, _too_deep_at(text)) from None
    except ValueError:  # the integer-length guard: its message advises a sys call, useless to a user
        long = _LONG_INTEGER.search(text)
        raise json.JSONDecodeError("an integer of more than 4,300 digits", text, long.start() if long else 0) from None


def _too_deep_at(text: str) -> int:
    """Where an array or object opens `_DEEP` levels deep (brackets inside strings skipped), or 0."""
    depth, in_string, escaped = 0, False, False
    for position, char in enumerate(text):
        if escaped:
            escaped = False
        elif in_string:
            escaped, in_string = char == "\\", char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth >= _DEEP:
                return position
        elif char in "]}":
            depth -= 1
    return 0
