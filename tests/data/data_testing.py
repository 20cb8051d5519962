"""Helpers shared by the data tests: one-line error checks and tiny data files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from lorakit import LorakitError


def assert_one_line_error(action: Callable[[], object], *words: str) -> str:
    """`action()` raises a LorakitError (a ValueError) whose single-line message contains each word
    (case-insensitive); returns the message."""
    with pytest.raises(LorakitError) as error:
        action()
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert message.strip(), "empty error message"
    assert "\n" not in message, f"message spans several lines: {message!r}"
    for word in words:
        assert re.search(re.escape(word), message, re.IGNORECASE), f"{word!r} not named in {message!r}"
    return message


def sentiment_frame(n: int = 40, pairs: bool = False, int_labels: bool = False) -> pd.DataFrame:
    """n rows of unique texts, labels cycling over three classes (pos, neg, neutral or 2, 10, 7)."""
    classes = [2, 10, 7] if int_labels else ["pos", "neg", "neutral"]
    frame = pd.DataFrame(
        {
            "text": [f"review number {i} says {'abc'[i % 3]}" for i in range(n)],
            "label": [classes[i % 3] for i in range(n)],
        }
    )
    if pairs:
        frame["hypothesis"] = [f"claim {i}" for i in range(n)]
    return frame


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path
