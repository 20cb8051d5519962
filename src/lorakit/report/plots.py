"""PNG charts of a run and of run comparisons: each function draws, writes ``path`` and returns it.

Empty inputs (no evaluation yet, no rows) still give a valid PNG that says "no data". The
figures come from :mod:`lorakit.report.curves`, :mod:`~lorakit.report.confusion` and
:mod:`~lorakit.report.compare`, which return :class:`matplotlib.figure.Figure` objects for
callers that want to draw them elsewhere (a notebook, an SVG).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lorakit.report.canvas import save_png
from lorakit.report.compare import comparison_figure, scatter_figure
from lorakit.report.confusion import confusion_figure
from lorakit.report.curves import loss_figure, metric_figure


def plot_loss_curves(history: Mapping[str, Any] | None, path: str | Path) -> Path:
    """Train loss per step and validation loss per evaluation on one step axis, epochs on top."""
    return save_png(loss_figure(history), path)


def plot_metric_curve(history: Mapping[str, Any] | None, metric: str, path: str | Path) -> Path:
    """Validation ``metric`` (e.g. ``"accuracy"``) per epoch, with markers, values and the best starred."""
    return save_png(metric_figure(history, metric), path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[float]], label_names: Sequence[Any] | None, path: str | Path, normalize: bool = False
) -> Path:
    """Heatmap of ``matrix[true][predicted]`` with each cell's count (or row share when ``normalize``)."""
    return save_png(confusion_figure(matrix, label_names, normalize), path)


def plot_comparison_bars(
    rows: Sequence[Mapping[str, Any]], metric_keys: Sequence[str], path: str | Path, label_key: str = "name"
) -> Path:
    """Grouped bars, one group per run (``row[label_key]``) and one bar per metric in ``metric_keys``."""
    return save_png(comparison_figure(rows, metric_keys, label_key), path)


def plot_scatter(
    rows: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    labels: str | None,
    path: str | Path,
    logx: bool = True,
) -> Path:
    """``row[y]`` against ``row[x]`` (log x when all x > 0 and ``logx``), points named by the key ``labels``."""
    return save_png(scatter_figure(rows, x, y, labels, logx), path)
