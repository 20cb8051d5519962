"""The confusion matrix as a heatmap with the value written in each cell.

``matrix[i][j]`` counts examples of true class ``i`` predicted as class ``j`` (scikit-learn's
convention). Normalised, each row is divided by its total, so the diagonal is per-class recall.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lorakit.errors import LorakitError
from lorakit.report.canvas import new_figure, no_data, short_label

MAX_ANNOTATED = 30
"""Up to this many classes every cell carries its value; above, the colours alone must do."""


def confusion_values(matrix: Sequence[Sequence[float]], normalize: bool = False) -> np.ndarray:
    """``matrix`` as a float array ``(n, n)``; normalised, each row sums to 1 (an all-zero row stays 0).

    Raises :class:`LorakitError` when the matrix is ragged, not numeric or not square.
    """
    try:
        values = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError) as error:
        raise LorakitError(f"confusion matrix must be n × n numbers: {error}") from None
    if values.size == 0:
        return values.reshape(0, 0)
    if values.ndim != 2 or values.shape[0] != values.shape[1]:
        raise LorakitError(f"confusion matrix must be square (n × n), got shape {values.shape}")
    if normalize:
        totals = values.sum(axis=1, keepdims=True)
        values = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
    return values


def class_names(n: int, label_names: Sequence[Any] | None) -> list[str]:
    """The ``n`` class names as text; numbered ``0…n-1`` when ``label_names`` is None or empty.

    Raises :class:`LorakitError` when ``label_names`` does not name exactly ``n`` classes.
    """
    if label_names is None or len(label_names) == 0:
        return [str(i) for i in range(n)]
    if len(label_names) != n:
        raise LorakitError(f"confusion matrix has {n} classes but {len(label_names)} label names were given")
    return [str(name) for name in label_names]


def confusion_figure(
    matrix: Sequence[Sequence[float]], label_names: Sequence[Any] | None, normalize: bool = False
) -> Figure:
    """Heatmap of ``matrix`` (true classes down, predicted across) with values, labels and a colorbar.

    The figure grows with the number of classes (4.5 in square up to 4 classes, 11.8 in at 20) and
    the text shrinks (10 pt up to 8 classes, 7.6 pt at 20, 6 pt from 28). Predicted-class names
    turn 45° when they would collide; names longer than 28 characters are cut with an ellipsis.
    ``label_names`` may be None (classes are numbered); otherwise it must name every class (see
    :func:`class_names`).
    """
    values = confusion_values(matrix, normalize)
    title = "Confusion matrix" + (" (normalised by true class)" if normalize else "")
    n = values.shape[0]
    if n == 0:
        return no_data(new_figure((5.5, 4.5)), title, "No confusion matrix computed")
    names = class_names(n, label_names)

    side = float(np.clip(2.8 + 0.45 * n, 4.5, 12.0))
    figure = new_figure((side + 1.2, side))
    ax = figure.add_subplot()
    top = 1.0 if normalize else max(float(values.max()), 1.0)
    image = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=top, interpolation="nearest")
    figure.colorbar(image, ax=ax, shrink=0.8, label="share of true class" if normalize else "examples")

    fontsize = float(np.clip(10 - 0.2 * (n - 8), 6, 10))
    labels = [short_label(name) for name in names]
    crowded = n > 4 or max(len(label) for label in labels) * n > 40
    ax.set_xticks(
        range(n), labels, fontsize=fontsize, rotation=45 if crowded else 0, ha="right" if crowded else "center"
    )
    if crowded:
        for tick in ax.get_xticklabels():
            tick.set_rotation_mode("anchor")
    ax.set_yticks(range(n), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= MAX_ANNOTATED:
        _write_cells(ax, values, top, normalize, fontsize)
    return figure


def _write_cells(ax: Axes, values: np.ndarray, top: float, normalize: bool, fontsize: float) -> None:
    """Each cell's value in its centre, white on dark cells and black on light ones."""
    for (i, j), value in np.ndenumerate(values):
        if normalize:
            text = "0" if value == 0 else f"{value:.2f}"
        else:
            text = f"{value:,.0f}" if float(value).is_integer() else f"{value:.3g}"
        color = "white" if value > 0.55 * top else "black"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
