"""Charts across runs: grouped bars per run, and one metric against another (e.g. accuracy vs params).

``rows`` are plain dicts, one per run, as compare and sweep tables hold them::

    [{"name": "LoRA r=8", "accuracy": 0.81, "macro_f1": 0.80, "trainable_params": 74498}, ...]

A missing or non-finite value leaves its bar or point out rather than raising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter
from matplotlib.transforms import Bbox

from lorakit.report.canvas import COLORS, WIDE, new_figure, no_data, plain, short_label
from lorakit.report.humanize import format_compact, label_for
from lorakit.report.values import finite

_MAX_BAR_LABELS = 40
_MAX_POINT_LABELS = 30


def comparison_figure(rows: Sequence[Mapping[str, Any]], metric_keys: Sequence[str], label_key: str = "name") -> Figure:
    """Grouped bars: one group per row (named by ``row[label_key]``, else ``#1``, ``#2``…), one bar per metric.

    The metrics share one y axis, so compare metrics of one scale (accuracy with macro-F1, not with
    seconds). Bars carry their values while there are at most 40 of them.
    """
    rows = [row for row in rows if any(finite(row.get(key)) is not None for key in metric_keys)]
    width = float(np.clip(2.5 + 0.45 * len(rows) * max(len(metric_keys), 1), WIDE[0], 14.0))
    figure = new_figure((width, WIDE[1]))
    title = " and ".join(label_for(key) for key in metric_keys) or "Comparison"
    if not rows:
        return no_data(figure, title, "No runs to compare")
    ax = figure.add_subplot()
    positions = np.arange(len(rows))
    bar_width = 0.8 / len(metric_keys)
    fraction = all(0 <= (finite(row.get(key)) or 0) <= 1 for row in rows for key in metric_keys)
    annotate = len(rows) * len(metric_keys) <= _MAX_BAR_LABELS
    for j, key in enumerate(metric_keys):
        values = [finite(row.get(key)) for row in rows]
        offset = (j - (len(metric_keys) - 1) / 2) * bar_width
        bars = ax.bar(
            positions + offset,
            [np.nan if value is None else value for value in values],
            bar_width,
            color=COLORS[j % len(COLORS)],
            label=plain(label_for(key)),
        )
        if annotate:
            texts = ["" if value is None else (f"{value:.3f}" if fraction else f"{value:.4g}") for value in values]
            ax.bar_label(bars, texts, padding=2, fontsize=8)
    names = [short_label(row.get(label_key, f"#{i + 1}")) for i, row in enumerate(rows)]
    crowded = sum(len(name) for name in names) > 60
    ax.set_xticks(positions, names, rotation=30 if crowded else 0, ha="right" if crowded else "center")
    if crowded:
        for tick in ax.get_xticklabels():
            tick.set_rotation_mode("anchor")
    if fraction:
        ax.set_ylim(0, 1.1)
    else:
        ax.margins(y=0.15)
    ax.set_title(plain(title))
    if len(metric_keys) > 1:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    else:
        ax.set_ylabel(plain(label_for(metric_keys[0])))
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return figure


def scatter_figure(
    rows: Sequence[Mapping[str, Any]], x: str, y: str, labels: str | None = None, logx: bool = True
) -> Figure:
    """``row[y]`` against ``row[x]``, each point named by ``row[labels]`` (a key; None: no names).

    The x axis is logarithmic when ``logx`` is set and every x is positive (trainable parameters
    span decades from LoRA to full fine-tuning), with ticks such as ``100K`` and ``10M``.
    """
    points = [(finite(row.get(x)), finite(row.get(y)), row.get(labels) if labels else None) for row in rows]
    points = [(px, py, name) for px, py, name in points if px is not None and py is not None]
    figure = new_figure()
    title = f"{label_for(y)} vs {label_for(x)}"
    if not points:
        return no_data(figure, title, "No runs with both values")
    ax = figure.add_subplot()
    xs = [px for px, _, _ in points]
    ys = [py for _, py, _ in points]
    ax.scatter(xs, ys, s=40, color=COLORS[0], edgecolor="white", linewidth=0.8, zorder=3)
    log = logx and min(xs) > 0
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        if max(xs) / min(xs) < 10:
            ax.set_xticks(sorted(set(xs)))
    ax.margins(x=0.15, y=0.15)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: format_compact(value)))
    ax.set_title(plain(title))
    ax.set_xlabel(plain(label_for(x)) + (" (log scale)" if log else ""))
    ax.set_ylabel(plain(label_for(y)))
    ax.grid(alpha=0.3)
    if labels and len(points) <= _MAX_POINT_LABELS:
        _name_points(figure, ax, [(px, py, name) for px, py, name in points if name is not None])
    return figure


def _name_points(figure: Figure, ax: Axes, points: Sequence[tuple[float, float, Any]]) -> None:
    """Write each point's name beside it without covering other names or points.

    Greedy: each name takes the first of up-right, up-left, down-right, down-left that stays inside
    the axes and clear of the names placed before it and of the other points; with no free spot it
    goes up-right. Call it last: names stay out of the layout, which must not move afterwards.
    """
    figure.draw_without_rendering()  # settles the layout, so display positions below are final
    renderer = figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    centres = ax.transData.transform([(px, py) for px, py, _ in points])
    markers = [Bbox.from_bounds(cx - 5, cy - 5, 10, 10) for cx, cy in centres]
    placed: list[Bbox] = []
    for k, (px, py, name) in enumerate(points):
        label = ax.annotate(short_label(name), (px, py), textcoords="offset points", xytext=(6, 5), fontsize=9)
        label.set_in_layout(False)
        obstacles = placed + markers[:k] + markers[k + 1 :]
        for dx, dy, ha, va in _NAME_SPOTS:
            label.set_position((dx, dy))
            label.set_horizontalalignment(ha)
            label.set_verticalalignment(va)
            box = label.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in obstacles):
                break
        else:
            label.set_position((6, 5))
            label.set_horizontalalignment("left")
            label.set_verticalalignment("baseline")
            box = label.get_window_extent(renderer)
        placed.append(box)


_NAME_SPOTS = ((6, 5, "left", "bottom"), (-6, 5, "right", "bottom"), (6, -5, "left", "top"), (-6, -5, "right", "top"))
