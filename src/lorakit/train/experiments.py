"""Several training runs side by side (compare, sweep): each in its own process, so its time
and peak memory are its own, then one table, one chart and one page for all of them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.folders import write_text
from lorakit.report import html, plots

TABLE_COLUMNS = (
    "name",
    "accuracy",
    "macro_f1",
    "trainable_params",
    "trainable_percent",
    "adapter_bytes",
    "train_seconds",
    "tokens_per_second",
    "peak_memory_bytes",
)


def run_training(train_args: Sequence[str], run_dir: Path) -> dict[str, Any]:
    """`lorakit train ARGS --output-dir run_dir` in a fresh process; its metrics.json.

    A run that already finished (metrics.json present) is not trained again, so an interrupted
    sweep continues where it stopped.
    """
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        resume = (run_dir / "config.yaml").is_file()
        command = [sys.executable, "-m", "lorakit.cli.main", "train"]
        command += ["--resume", str(run_dir)] if resume else [*train_args, "--output-dir", str(run_dir)]
        finished = subprocess.run(command, check=False)
        if finished.returncode != 0 or not metrics_file.is_file():
            raise LorakitError(f"the run in {run_dir} failed (exit {finished.returncode}); see its output above")
    return json.loads(metrics_file.read_text())


def table_row(name: str, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One row of the comparison table: the run's name, `extra` columns, then TABLE_COLUMNS from its metrics."""
    return {"name": name, **extra, **{key: metrics.get(key) for key in TABLE_COLUMNS if key != "name"}}


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """The rows as a Markdown table of `columns`."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_summary(
    folder: Path, title: str, rows: list[dict[str, Any]], columns: Sequence[str], images: dict[str, Path]
) -> Path:
    """results.json, results.md and report.html in `folder`; returns the report's path."""
    write_text(folder / "results.json", json.dumps(rows, indent=2) + "\n")
    write_text(folder / "results.md", markdown_table(rows, columns) + "\n")
    return html.write_table_report(folder / "report.html", title=title, rows=rows, columns=list(columns), images=images)


def scatter(rows: list[dict[str, Any]], x: str, y: str, path: Path) -> Path:
    """A scatter plot of `y` against `x`, one labelled point per row."""
    return plots.plot_scatter(rows, x, y, "name", path)


def bars(rows: list[dict[str, Any]], keys: Sequence[str], path: Path) -> Path:
    """Grouped bars of `keys`, one group per row."""
    return plots.plot_comparison_bars(rows, list(keys), path)
