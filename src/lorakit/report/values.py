"""Reading the plain run data the training loop hands over: numbers that may be missing, history records."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite real number (numpy scalars too), else None.

    Missing values, NaN, ±inf, booleans and text all give None, so callers skip them.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def records(history: Mapping[str, Any] | None, split: str) -> list[Mapping[str, Any]]:
    """The record dicts under ``history[split]`` (``"train"`` or ``"eval"``); empty when absent."""
    if not history:
        return []
    return [record for record in history.get(split) or [] if isinstance(record, Mapping)]


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (losses, perplexity, error rates)."""
    name = metric.lower()
    return any(word in name for word in ("loss", "perplexity", "ppl", "error"))
