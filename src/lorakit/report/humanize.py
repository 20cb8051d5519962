"""Numbers as people read them: bytes in binary units, durations in h/min/s, counts with K/M/B.

Every function takes a plain number and returns a short string; a non-finite value (NaN, ±inf)
comes back as ``"n/a"`` so a diverged run still renders.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

NOT_AVAILABLE = "n/a"
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_COUNT_UNITS = ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"))
_ACRONYMS = {"f1": "F1", "lr": "LR", "auc": "AUC", "ppl": "PPL"}
_HEADINGS = {
    "adapter_bytes": "Adapter size",
    "peak_memory_bytes": "Peak memory",
    "train_seconds": "Train time",
    "tokens_per_second": "Tokens / s",
    "trainable_percent": "Trainable %",
}
_UNIT_WORDS = (("_bytes", "_size"), ("_seconds", "_time"), ("_percent", "_%"))


def format_bytes(n: float) -> str:
    """Bytes in binary units with one decimal: ``301234`` → ``"294.2 KiB"``, ``512`` → ``"512 B"``."""
    if not math.isfinite(n):
        return NOT_AVAILABLE
    size, unit = float(n), _BYTE_UNITS[0]
    for larger in _BYTE_UNITS[1:]:
        if abs(round(size, 1)) < 1024:
            break
        size, unit = size / 1024, larger
    return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"


def parse_bytes(text: str) -> int:
    """ "4GiB", "4 GB", "512MiB", "1.5G", "2048M", or a plain byte count → bytes (powers of 1024).

    Raises:
        LorakitError: not a size.
    """
    units = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    cleaned = str(text).strip().lower().replace(" ", "")
    number = cleaned.rstrip("abgikmt")
    unit = cleaned[len(number) :].replace("ib", "").replace("b", "") if cleaned[len(number) :] != "b" else "b"
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if unit not in units or not math.isfinite(value) or value <= 0:
        raise ValueError(f"not a size such as 4GiB, 512MiB or 1.5G: {text!r}")
    return int(value * units[unit])


def format_duration(seconds: float) -> str:
    """A duration: ``0.25`` → ``"250 ms"``, ``4.25`` → ``"4.2 s"``, ``312.5`` → ``"5 min 12 s"``.

    Under a second in milliseconds; under 10 s with one decimal; then whole seconds; from an hour
    on whole minutes (``7380`` → ``"2 h 3 min"``); from a day on whole hours (``"1 d 3 h"``).
    """
    if not math.isfinite(seconds):
        return NOT_AVAILABLE
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if round(seconds, 3) < 1:
        return f"{seconds * 1000:.0f} ms"
    if round(seconds, 1) < 10:
        return f"{seconds:.1f} s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60} s"
    minutes = round(seconds / 60)
    if minutes < 24 * 60:
        return f"{minutes // 60} h {minutes % 60} min"
    hours = round(seconds / 3600)
    return f"{hours // 24} d {hours % 24} h"


def format_count(n: float) -> str:
    """A count with thousands separators: ``22788484`` → ``"22,788,484"``; fractions keep 2 decimals."""
    if not math.isfinite(n):
        return NOT_AVAILABLE
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.2f}"


def format_compact(n: float) -> str:
    """A count in 3 significant digits with a suffix: ``74498`` → ``"74.5K"``, ``22788484`` → ``"22.8M"``."""
    if not math.isfinite(n):
        return NOT_AVAILABLE
    for scale, suffix in _COUNT_UNITS:
        if abs(n) >= scale:
            return f"{n / scale:.3g}{suffix}"
    return f"{n:.3g}"


def format_percent(percent: float, digits: int = 2) -> str:
    """A value already in percent (PEFT's ``trainable%``): ``0.3269`` → ``"0.33 %"``."""
    if not math.isfinite(percent):
        return NOT_AVAILABLE
    return f"{percent:.{digits}f} %"


def format_number(x: float) -> str:
    """A general number: integers and values from 1000 up with separators, others in 4 significant digits.

    ``0.81234`` → ``"0.8123"``, ``1e-4`` → ``"0.0001"``, ``5210.3`` → ``"5,210"``, ``74498`` → ``"74,498"``.
    """
    if isinstance(x, bool):
        return str(x)
    if not math.isfinite(x):
        return NOT_AVAILABLE
    if isinstance(x, numbers.Integral) or abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.4g}"


def label_for(key: str) -> str:
    """A metric or column key as a heading: ``"macro_f1"`` → ``"Macro-F1"``, ``"lr"`` → ``"LR"``.

    Keys whose values :func:`format_value` shows in units are named for the quantity, not the
    unit: ``"adapter_bytes"`` → ``"Adapter size"``, ``"eval_seconds"`` → ``"Eval time"``.
    """
    if key in _HEADINGS:
        return _HEADINGS[key]
    for unit, word in _UNIT_WORDS:
        if key.endswith(unit):
            key = key[: -len(unit)] + word
    words = [_ACRONYMS.get(word.lower(), word) for word in key.replace("-", "_").split("_") if word]
    if not words:
        return key
    text = " ".join(words).replace("macro F1", "macro-F1").replace("micro F1", "micro-F1")
    return text[0].upper() + text[1:]


def format_value(key: str, value: Any) -> str:
    """``value`` for a table cell, in the unit its key names.

    ``*_bytes`` → :func:`format_bytes`, ``*_seconds`` → :func:`format_duration`, ``*_percent`` →
    :func:`format_percent`, ``*_params`` → :func:`format_count`; other numbers
    :func:`format_number`; None → ``"–"``; lists and dicts as compact JSON; anything else ``str``.
    """
    if value is None:
        return "–"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str, ensure_ascii=False, separators=(", ", ": "))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    formatter = _unit_formatter(key) or format_number
    return formatter(value)


def format_column(key: str, values: Sequence[Any]) -> list[str]:
    """:func:`format_value` for each of a table column's values, with one number of decimals throughout.

    A column of plain fractional floats (no unit in its key) gets as many decimals as its most
    precise value needs in 4 significant digits: ``[0.812, 0.82, 0.7]`` → ``0.812, 0.820, 0.700``.
    Any other column (units, integers, text, NaN, a mix) is formatted value by value.
    """
    texts = [format_value(key, value) for value in values]
    present = [value for value in values if value is not None]
    uniform = bool(present) and _unit_formatter(key) is None and all(_plain_float(value) for value in present)
    if not uniform or any("e" in text for text in texts):
        return texts
    decimals = max(len(text.partition(".")[2]) for text in texts)
    return ["–" if value is None else f"{value:,.{decimals}f}" for value in values]


def _unit_formatter(key: str) -> Callable[[float], str] | None:
    for suffix, formatter in _UNIT_SUFFIXES:
        if key.endswith(suffix):
            return formatter
    return None


def _plain_float(value: Any) -> bool:
    """A finite real number that is not a bool or an integer type (``2.0`` counts, ``2`` does not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)) and math.isfinite(value)


_UNIT_SUFFIXES = (
    ("_bytes", format_bytes),
    ("_seconds", format_duration),
    ("_percent", format_percent),
    ("_params", format_count),
)
