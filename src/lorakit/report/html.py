"""Self-contained HTML reports: one file with inline CSS and images embedded as data URIs.

``write_report`` tells the story of one training run (headline numbers, charts, per-class
scores, confusion matrix, mistakes or generations, config); ``write_table_report`` shows a compare or sweep
table with its charts. Neither loads anything from elsewhere, so a report opens offline, can be
mailed or archived as it is, and a dataset text that holds ``<script>`` shows as text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lorakit.folders import write_text
from lorakit.report.markup import image_grid, page, section
from lorakit.report.sections import (
    config_details,
    confusion_table,
    evaluations_table,
    generations_table,
    headline,
    misclassified_table,
    other_values,
    per_class_table,
    run_facts,
    values_table,
)


def write_report(
    path: str | Path,
    *,
    title: str,
    metrics: Mapping[str, Any] | None = None,
    history: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    misclassified: Sequence[Mapping[str, Any]] | None = None,
    generations: Sequence[Mapping[str, Any]] | None = None,
    images: Mapping[str, str | Path] | None = None,
) -> Path:
    """Write the report of one run to ``path`` (parents created) and return the path.

    Args:
        title: the page heading, e.g. ``"all-MiniLM-L6-v2 · rotten-tomatoes · LoRA r=8"``.
        metrics: final test metrics and run facts (``metrics.json``); any key may be missing,
            unknown keys are listed under "Other values".
        history: ``{"train": [...], "eval": [...]}`` records; the evaluations become a table.
        config: the resolved run config (nested dicts), shown collapsed.
        misclassified: a sample of wrong predictions (``text``, ``label``, ``predicted``,
            ``probability``, any other field).
        generations: held-out prompts with their reference and generated texts (``prompt``,
            ``reference``, ``before training``, ``after training``, ``F1 ...`` numbers).
        images: caption → image file (PNG, JPEG, GIF, WebP, SVG), embedded in this order.

    Raises:
        LorakitError: an image that does not exist or is not an image type, a confusion matrix
            that is not square or does not match ``label_names``.
    """
    metrics = metrics or {}
    parts = [
        run_facts(metrics),
        headline(metrics),
        section("Charts", image_grid(images)) if images else "",
        per_class_table(metrics),
        confusion_table(metrics),
        misclassified_table(misclassified),
        generations_table(generations),
        evaluations_table(history),
        other_values(metrics),
        config_details(config),
    ]
    body = "\n".join(part for part in parts if part) or '<p class="note">Nothing recorded for this run yet.</p>'
    return _write(path, page(title, body))


def write_table_report(
    path: str | Path,
    *,
    title: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    images: Mapping[str, str | Path] | None = None,
) -> Path:
    """Write a table of runs (compare, sweep) with its charts to ``path`` and return the path.

    ``columns`` picks and orders the keys shown (default: every key, in order of first
    appearance); values show in the unit their key names (``adapter_bytes`` → ``KiB``,
    ``train_seconds`` → ``min s``). Images come first, captioned by their keys.
    """
    parts = [image_grid(images)]
    parts.append(
        section("Results", values_table(rows, columns), note=f"{len(rows)} runs")
        if rows
        else section("Results", "", note="No runs to show.")
    )
    return _write(path, page(title, "\n".join(part for part in parts if part)))


def _write(path: str | Path, document: str) -> Path:
    path = Path(path)
    write_text(path, document)
    return path
