"""Figures drawn without pyplot, so plotting is safe in threads and worker processes.

Each figure is a bare :class:`matplotlib.figure.Figure` on its own Agg canvas: no global pyplot
state, no GUI backend, no figure manager that keeps figures alive. A PNG is ``figsize × DPI``
pixels exactly (no tight bounding box), so reports and tests can rely on the size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lorakit.folders import staged_files

DPI = 110
WIDE = (6.0, 3.7)
"""Size in inches of line and bar charts: 660 × 407 px at :data:`DPI`, about a report column's width."""

COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
"""Tableau colours in matplotlib's default order, named so plots do not depend on rcParams."""

_MAX_LABEL = 28


def new_figure(size: tuple[float, float] = WIDE) -> Figure:
    """A figure of ``size`` inches with constrained layout (labels never overlap the axes)."""
    figure = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at :data:`DPI` (creating parent folders), whole or not at all, and
    return the path."""
    path = Path(path)
    with staged_files(path) as (staged,):
        figure.savefig(staged, dpi=DPI, format="png", facecolor="white")
    return path


def no_data(figure: Figure, title: str, note: str) -> Figure:
    """Turn ``figure`` into an empty panel that says why there is nothing to plot."""
    ax = figure.add_subplot()
    ax.set_axis_off()
    ax.set_title(plain(title))
    ax.text(0.5, 0.5, plain(note), ha="center", va="center", fontsize=12, color="0.45", transform=ax.transAxes)
    return figure


def plain(text: Any, max_chars: int | None = None) -> str:
    """``text`` as literal matplotlib text: ``$`` escaped (no mathtext), cut to ``max_chars`` with an ellipsis."""
    text = str(text)
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return text.replace("$", r"\$")


def short_label(text: Any) -> str:
    """A tick label: literal, at most 28 characters."""
    return plain(text, _MAX_LABEL)
