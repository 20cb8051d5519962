"""Reports of training runs: PNG charts and self-contained HTML pages built from plain run data.

This layer sits below training and the CLI: it takes dicts and lists (history, metrics, config,
rows of runs) and imports nothing of lorakit but :mod:`lorakit.errors`.
"""

from lorakit.report.html import write_report, write_table_report
from lorakit.report.humanize import format_bytes, format_count, format_duration
from lorakit.report.plots import (
    plot_comparison_bars,
    plot_confusion_matrix,
    plot_loss_curves,
    plot_metric_curve,
    plot_scatter,
)

__all__ = [
    "format_bytes",
    "format_count",
    "format_duration",
    "plot_comparison_bars",
    "plot_confusion_matrix",
    "plot_loss_curves",
    "plot_metric_curve",
    "plot_scatter",
    "write_report",
    "write_table_report",
]
