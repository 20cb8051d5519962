"""Class labels as read (strings, integers, floats, booleans) → class names and indices.

Either the source fixes the classes (a builtin's, a `datasets` ClassLabel's) and labels are
matched to them by name, or the classes are read from the data: whole numbers sort as numbers and
are named by their digits ("2" < "7" < "10"), anything else sorts as strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from lorakit.data.wording import kind_of
from lorakit.errors import LorakitError, option_setting

_INTEGER = re.compile(r"[+-]?\d+")
# Longer digit strings are names, as numbers past float's range are: Python refuses to convert them
# (its guard against slow parsing).
_MAX_DIGITS = 4_300
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def infer_labels(
    raw: Mapping[str, list[object]], origins: Mapping[str, str], column: str
) -> tuple[list[str], dict[str, list[int]]]:
    """Classes read from the labels of every split, and each split's labels as indices into them.

    Args:
        raw: split → its labels as read (none missing).
        origins: split → what messages call its table.
        column: the label column, for messages.

    Raises:
        LorakitError: a label that is not a class (a list, a dict), or non-integer numbers (a
            regression target).
    """
    keys = {split: [_label_key(value, column, origins[split]) for value in values] for split, values in raw.items()}
    every = [key for split_keys in keys.values() for key in split_keys]
    numeric = all(isinstance(key, (int, float)) for key in every)
    if numeric and not all(isinstance(key, int) for key in every):
        example = next(key for key in every if isinstance(key, float))
        raise LorakitError(
            f"column {column!r} holds non-integer numbers such as {example}: that is a regression target, "
            f"not class labels; pass {option_setting('label_column', '<a column of class labels>')}"
        )
    if not numeric:
        keys = {split: [str(key) for key in split_keys] for split, split_keys in keys.items()}
    # Classes come from every split so that a held-out label missing from train has a name for
    # the caller to refuse it by.
    classes = sorted({key for split_keys in keys.values() for key in split_keys})
    index = {key: i for i, key in enumerate(classes)}
    encoded = {split: [index[key] for key in split_keys] for split, split_keys in keys.items()}
    return [str(key) for key in classes], encoded


def match_labels(
    raw: Mapping[str, list[object]], origins: Mapping[str, str], label_names: list[str]
) -> dict[str, list[int]]:
    """Each split's labels as indices into a fixed class list, matched by name (stripped).

    Raises:
        LorakitError: a label that is not one of `label_names`.
    """
    index = {name: i for i, name in enumerate(label_names)}
    encoded = {}
    for split, values in raw.items():
        names = [str(value).strip() for value in values]
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise LorakitError(
                f"{origins[split]} has label {unknown[0]!r}, which is not one of the dataset's "
                f"classes {label_names}; fix the label"
            )
        encoded[split] = [index[name] for name in names]
    return encoded


def _label_key(value: object, column: str, origin: str) -> int | float | str:
    """A raw label as an int when it is a whole number (1, 1.0, "1"), a float for other numbers,
    else its stripped string; booleans are names ("True"), not the integers 0 and 1."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text) and len(text) <= _MAX_DIGITS:
            return int(text)
        if _NUMBER.fullmatch(text) and math.isfinite(number := float(text)):
            return int(number) if number.is_integer() else number
        return text
    raise LorakitError(
        f"column {column!r} of {origin} holds {kind_of(value)} values, not class labels; pick a label column"
    )
