"""Training curves from a run's history: loss per step, a validation metric per epoch.

``history`` is plain data as the training loop logs it::

    {"train": [{"step": 10, "epoch": 0.12, "loss": 0.69, "lr": 1e-4}, ...],
     "eval":  [{"step": 80, "epoch": 1.0, "loss": 0.52, "accuracy": 0.78}, ...]}

Records without a step, or with a missing or non-finite value, are left out; with nothing left
the figure says so instead of raising.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lorakit.report.canvas import COLORS, new_figure, no_data, plain
from lorakit.report.humanize import label_for
from lorakit.report.values import finite, lower_is_better, records

SMOOTH_FROM = 30
"""From this many train points on, the raw loss is drawn faint under a smoothed line."""
_MAX_EPOCH_LINES = 20
_MAX_VALUE_LABELS = 12


def loss_figure(history: Mapping[str, Any] | None) -> Figure:
    """Train loss per logged step and validation loss per evaluation, on one step axis.

    When ``epoch`` grows in proportion to ``step`` a top axis shows epochs and dotted lines mark
    each epoch's end. Many train points are smoothed (bias-corrected EMA) over the faint raw curve.
    """
    train = _series(records(history, "train"), "step", "loss")
    evals = _series(records(history, "eval"), "step", "loss")
    figure = new_figure()
    if not train and not evals:
        return no_data(figure, "Loss", "No loss logged yet")
    ax = figure.add_subplot()
    if train:
        steps, losses = zip(*train, strict=True)
        if len(train) >= SMOOTH_FROM:
            ax.plot(steps, losses, color=COLORS[0], alpha=0.25, linewidth=1)
            ax.plot(steps, _ema(losses), color=COLORS[0], linewidth=2, label="train (smoothed)")
        else:
            ax.plot(steps, losses, color=COLORS[0], linewidth=1.6, label="train")
    if evals:
        steps, losses = zip(*evals, strict=True)
        best = int(np.argmin(losses))
        label = f"validation (best {losses[best]:.3g} at step {steps[best]:g})"
        ax.plot(steps, losses, color=COLORS[1], linewidth=1.6, marker="o", markersize=5, label=label)
    _epoch_axis(ax, records(history, "train") + records(history, "eval"))
    ax.set_title("Loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.margins(y=0.12)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return figure


def metric_figure(history: Mapping[str, Any] | None, metric: str) -> Figure:
    """Validation ``metric`` per evaluation (by epoch, else by step) with markers and values.

    The best value (the highest, or the lowest for losses and perplexity) is starred. Up to 12
    points carry their value; beyond that only the best and the last do, so labels never pile up.
    """
    evals = records(history, "eval")
    by_epoch = bool(evals) and all(finite(record.get("epoch")) is not None for record in evals)
    x_key = "epoch" if by_epoch else "step"
    points = _series(evals, x_key, metric)
    name = label_for(metric)
    figure = new_figure()
    if not points:
        return no_data(figure, f"Validation {name}", f"No {metric} in the evaluations yet")
    xs, ys = zip(*points, strict=True)
    fraction = all(0.0 <= y <= 1.0 for y in ys)
    fmt = "{:.3f}" if fraction else "{:.4g}"
    best = int(np.argmin(ys) if lower_is_better(metric) else np.argmax(ys))

    ax = figure.add_subplot()
    ax.plot(xs, ys, color=COLORS[2], linewidth=1.8, marker="o", markersize=6, label="validation")
    ax.plot(
        [xs[best]],
        [ys[best]],
        linestyle="none",
        marker="*",
        markersize=15,
        color=COLORS[3],
        label=f"best {fmt.format(ys[best])} ({x_key} {xs[best]:g})",
    )
    labelled = range(len(xs)) if len(xs) <= _MAX_VALUE_LABELS else sorted({best, len(xs) - 1})
    for i in labelled:
        ax.annotate(
            fmt.format(ys[i]), (xs[i], ys[i]), textcoords="offset points", xytext=(0, 9), ha="center", fontsize=9
        )
    if by_epoch and len(xs) <= 20 and all(float(x).is_integer() for x in xs):
        ax.set_xticks(xs)
    ax.set_title(f"Validation {plain(name)}")
    ax.set_xlabel(x_key)
    ax.set_ylabel(plain(name))
    ax.margins(x=0.08, y=0.25)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return figure


def _series(rows: Sequence[Mapping[str, Any]], x_key: str, y_key: str) -> list[tuple[float, float]]:
    """``(x, y)`` pairs of the rows where both are finite numbers, sorted by x."""
    pairs = [(finite(row.get(x_key)), finite(row.get(y_key))) for row in rows]
    return sorted((x, y) for x, y in pairs if x is not None and y is not None)


def _ema(values: Sequence[float], weight: float = 0.9) -> np.ndarray:
    """Exponential moving average, bias-corrected so the first points are not pulled to zero."""
    smoothed = np.empty(len(values))
    running = 0.0
    for i, value in enumerate(values):
        running = weight * running + (1 - weight) * value
        smoothed[i] = running / (1 - weight ** (i + 1))
    return smoothed


def _epoch_axis(ax: Axes, rows: Sequence[Mapping[str, Any]]) -> None:
    """A top axis in epochs and a dotted line per finished epoch, when epochs are proportional to steps.

    ``steps_per_epoch`` is the median of ``step / epoch``; it is used only when every record lies
    within 5 % of the step range of that line (a loop that logs whole epoch indices does not).
    """
    pairs = [(finite(row.get("step")), finite(row.get("epoch"))) for row in rows]
    pairs = [(step, epoch) for step, epoch in pairs if step is not None and epoch is not None and epoch > 0]
    if not pairs:
        return
    steps_per_epoch = float(np.median([step / epoch for step, epoch in pairs]))
    last_step = max(step for step, _ in pairs)
    if steps_per_epoch <= 0 or any(abs(step - epoch * steps_per_epoch) > 0.05 * last_step + 1 for step, epoch in pairs):
        return
    top = ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch))
    top.set_xlabel("epoch")
    last_epoch = last_step / steps_per_epoch
    if last_epoch >= 2:
        top.xaxis.set_major_locator(MaxNLocator(integer=True))
    whole_epochs = math.floor(last_epoch + 1e-9)
    if whole_epochs <= _MAX_EPOCH_LINES:
        for epoch in range(1, whole_epochs + 1):
            ax.axvline(epoch * steps_per_epoch, color="0.55", linewidth=0.8, linestyle=":", zorder=0)
