"""One cell of a table, read the same way by every task: missing or not, and as text.

A cell is missing when it is None, pandas' NA, NaN, or a blank (empty or whitespace-only) string:
a blank text has nothing to learn from, whatever the file format wrote for it. A label is also
missing when it is the text "nan" (any case): what pandas writes for a missing number in a CSV
(`na_rep` "nan", `astype(str)`), never a class.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lorakit.data.wording import kind_of
from lorakit.errors import LorakitError


def is_missing(value: object) -> bool:
    """Whether a cell holds nothing: None, pandas' NA, NaN, or a blank string."""
    if isinstance(value, str):
        return not value.strip()
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def is_missing_label(value: object) -> bool:
    """Whether a label cell holds nothing: `is_missing`, or the text "nan" in any case."""
    return is_missing(value) or (isinstance(value, str) and value.strip().lower() == "nan")


def text_cell(value: object, column: str, origin: str, row: int) -> str | None:
    """A cell as text: None where missing (see `is_missing`), a string as it is, a number as its digits.

    Raises:
        LorakitError: any other type (a list, an object, a boolean), naming the column, the table
            (`origin`) and the 1-based `row`.
    """
    if isinstance(value, str):
        return value if value.strip() else None
    if is_missing(value):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return str(value)
    raise LorakitError(
        f"column {column!r} of {origin} holds {kind_of(value)} values, not text (row {row}); pick a text column"
    )
