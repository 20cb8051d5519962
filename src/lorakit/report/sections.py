"""The parts of a run report, each built from the plain data the training loop hands over.

Each function returns an HTML fragment, or ``""`` when its data is missing, so a report shows
what there is. All data reaches the page through :func:`~lorakit.report.markup.esc`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lorakit.report.confusion import class_names, confusion_values
from lorakit.report.humanize import (
    format_bytes,
    format_column,
    format_compact,
    format_count,
    format_duration,
    format_percent,
    format_value,
    label_for,
)
from lorakit.report.markup import cell, esc, section, table
from lorakit.report.values import finite, records

FACT_KEYS = ("task", "model", "dataset", "method", "device", "precision", "epochs", "best_epoch")
HEADLINE_KEYS = (
    "accuracy",
    "macro_f1",
    "loss",
    "perplexity",
    "trainable_params",
    "total_params",
    "trainable_percent",
    "adapter_bytes",
    "train_seconds",
    "tokens_per_second",
    "peak_memory_bytes",
)
TABLE_KEYS = ("per_class", "confusion_matrix", "label_names")
SUMMARY_ROWS = ("micro avg", "macro avg", "weighted avg", "samples avg")
"""Rows of scikit-learn's ``classification_report(output_dict=True)`` that summarise the classes."""

TEXT_CHARS = 400
"""Misclassified texts longer than this are cut in the table; the cell's hover text has them whole."""
HEADER_CHARS = 30
"""Class names longer than this are cut in the confusion table's (vertical) column headers."""


def run_facts(metrics: Mapping[str, Any]) -> str:
    """The run's identity (task, model, dataset, method, device, precision, epochs) as a row of chips."""
    chips = [
        f"<li><b>{esc(label_for(key))}</b>{esc(format_value(key, metrics[key]))}</li>"
        for key in FACT_KEYS
        if metrics.get(key) is not None
    ]
    return f'<ul class="facts">{"".join(chips)}</ul>' if chips else ""


def headline(metrics: Mapping[str, Any]) -> str:
    """Cards with the numbers a reader looks for first: quality, size, cost."""
    cards = "".join(_card(label, value, note) for label, value, note in _headline_cards(metrics))
    return f'<div class="cards">{cards}</div>' if cards else ""


def per_class_table(metrics: Mapping[str, Any]) -> str:
    """Precision, recall, F1 and support per class, then the averages, each score with a bar behind it.

    Takes scikit-learn's ``classification_report(output_dict=True)`` as it is (``f1-score``, a
    scalar ``accuracy`` entry, ``macro avg`` rows) as well as ``f1``. Classes follow ``label_names``.
    """
    per_class = metrics.get("per_class")
    if not isinstance(per_class, Mapping):
        return ""
    names = [str(name) for name in _listed(metrics.get("label_names"))]
    ordered = [name for name in names if name in per_class]
    ordered += [name for name in per_class if name not in ordered and name not in SUMMARY_ROWS]
    ordered += [name for name in SUMMARY_ROWS if name in per_class]
    rows = [
        _class_row(name, per_class[name], summary=name in SUMMARY_ROWS)
        for name in ordered
        if isinstance(per_class[name], Mapping)
    ]
    if not rows:
        return ""
    headers = ["class", "precision", "recall", "F1", "support"]
    return section("Per-class metrics", table(headers, rows, numeric=(False, True, True, True, True)))


def confusion_table(metrics: Mapping[str, Any]) -> str:
    """The confusion matrix as a table, each cell shaded by its share of the true class's row.

    Raises :class:`~lorakit.errors.LorakitError` for a matrix that is not square or label names
    that do not match it, as the plot does.
    """
    values = confusion_values(_listed(metrics.get("confusion_matrix")))
    n = values.shape[0]
    if n == 0:
        return ""
    names = class_names(n, metrics.get("label_names"))
    head_class = ' class="vertical"' if n > 6 or max(len(name) for name in names) > 14 else ""
    head = '<th class="true">true ↓ / predicted →</th>'
    head += "".join(f'<th{head_class} title="{esc(name)}">{esc(_cut(name, HEADER_CHARS))}</th>' for name in names)
    head += '<th class="num">total</th>'
    rows = []
    for i, name in enumerate(names):
        total = float(values[i].sum())
        cells = "".join(_confusion_cell(float(value), total, diagonal=i == j) for j, value in enumerate(values[i]))
        rows.append(f'<tr><th class="true">{esc(name)}</th>{cells}{cell(format_count(total), numeric=True)}</tr>')
    body = (
        f'<div class="scroll"><table class="confusion"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    return section(
        "Confusion matrix", body, note="Rows: true class. Columns: predicted class. Shade: share of the row."
    )


def misclassified_table(examples: Sequence[Mapping[str, Any]] | None) -> str:
    """The sample of wrong predictions: text, true label, prediction, probability, then any other field."""
    examples = [example for example in examples or [] if isinstance(example, Mapping)]
    if not examples:
        return ""
    present = list(dict.fromkeys(key for example in examples for key in example))
    preferred = [key for key in ("text", "label", "predicted", "probability") if key in present]
    columns = preferred + [key for key in present if key not in preferred]
    headers = ["#"] + ["true label" if key == "label" else key for key in columns]
    rows = [
        [cell(i + 1, numeric=True)] + [_example_cell(key, example.get(key)) for key in columns]
        for i, example in enumerate(examples)
    ]
    numeric = [True] + [key == "probability" for key in columns]
    return section(
        f"Misclassified examples ({len(examples)} shown)", table(headers, rows, numeric=numeric, css="texts")
    )


def generations_table(samples: Sequence[Mapping[str, Any]] | None) -> str:
    """Held-out prompts with the reference answer and what the model generated before and after
    training; F1 columns (word overlap with the reference) are numbers, the rest text."""
    samples = [sample for sample in samples or [] if isinstance(sample, Mapping)]
    if not samples:
        return ""
    columns = list(dict.fromkeys(key for sample in samples for key in sample))
    numeric = [True] + [key.startswith("F1") for key in columns]
    rows = [
        [cell(i + 1, numeric=True)]
        + [
            cell(f"{value:.2f}", numeric=True)
            if key.startswith("F1") and (value := finite(sample.get(key))) is not None
            else _example_cell("text", sample.get(key))
            for key in columns
        ]
        for i, sample in enumerate(samples)
    ]
    note = "greedy decoding; F1 = word overlap with the reference"
    return section(
        f"Generations on held-out prompts ({len(samples)})",
        table(["#", *columns], rows, numeric=numeric, css="texts"),
        note=note,
    )


def evaluations_table(history: Mapping[str, Any] | None) -> str:
    """Every evaluation during training, one row each, with all the values it logged."""
    evals = records(history, "eval")
    return section("Evaluations during training", values_table(evals)) if evals else ""


def other_values(metrics: Mapping[str, Any]) -> str:
    """Every metric the other sections do not show, so nothing in ``metrics.json`` goes unseen."""
    shown = set(FACT_KEYS) | set(HEADLINE_KEYS) | set(TABLE_KEYS)
    rest = {key: value for key, value in metrics.items() if key not in shown}
    return section("Other values", key_value_table(rest)) if rest else ""


def config_details(config: Mapping[str, Any] | None) -> str:
    """The resolved run config, flattened to dotted keys (``optim.lr``), collapsed in a ``<details>``."""
    if not config:
        return ""
    flat = dict(_flatten(config))
    rows = [[cell(key), cell(_raw(value))] for key, value in flat.items()]
    body = f"<details><summary>{len(flat)} settings</summary>{table(['key', 'value'], rows, css='kv')}</details>"
    return section("Resolved config", body)


def key_value_table(values: Mapping[str, Any]) -> str:
    """Two columns, key and value, each value in the unit its key names (see ``format_value``)."""
    rows = [[cell(key), cell(format_value(key, value))] for key, value in values.items()]
    return table(["key", "value"], rows, css="kv")


def values_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """One row per dict and one column per key (``columns``, else every key in order of first appearance).

    Columns whose values are all numbers (or missing) align right; headers are humanised keys.
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    numeric = [all(row.get(key) is None or finite(row.get(key)) is not None for row in rows) for key in columns]
    texts = [format_column(key, [row.get(key) for row in rows]) for key in columns]
    body = [
        [cell(column[i], numeric=is_number) for column, is_number in zip(texts, numeric, strict=True)]
        for i in range(len(rows))
    ]
    return table([label_for(key) for key in columns], body, numeric=numeric)


def _headline_cards(metrics: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(label, value, note)`` for each headline number present in ``metrics``."""
    for key, label in (("accuracy", "Accuracy"), ("macro_f1", "Macro-F1")):
        if (score := finite(metrics.get(key))) is not None:
            yield label, f"{score:.3f}", "test set"
    if (loss := finite(metrics.get("loss"))) is not None:
        yield "Test loss", f"{loss:.4g}", ""
    if (perplexity := finite(metrics.get("perplexity"))) is not None:
        yield "Perplexity", f"{perplexity:.2f}", ""
    if (trainable := finite(metrics.get("trainable_params"))) is not None:
        total = finite(metrics.get("total_params"))
        percent = finite(metrics.get("trainable_percent"))
        if percent is None and total:
            percent = 100 * trainable / total
        parts = [format_percent(percent) if percent is not None else "", f"of {format_compact(total)}" if total else ""]
        yield "Trainable params", format_count(trainable), " ".join(filter(None, parts))
    if (size := finite(metrics.get("adapter_bytes"))) is not None:
        yield "Adapter size", format_bytes(size), "safetensors on disk"
    if (seconds := finite(metrics.get("train_seconds"))) is not None:
        epochs = finite(metrics.get("epochs"))
        yield "Train time", format_duration(seconds), f"{epochs:g} epochs" if epochs is not None else ""
    if (rate := finite(metrics.get("tokens_per_second"))) is not None:
        yield "Throughput", format_count(round(rate)), "tokens / s"
    if (memory := finite(metrics.get("peak_memory_bytes"))) is not None:
        device = metrics.get("device")
        yield "Peak memory", format_bytes(memory), f"on {device}" if device else ""


def _card(label: str, value: str, note: str) -> str:
    note_html = f'<div class="sub">{esc(note)}</div>' if note else ""
    return (
        f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>{note_html}</div>'
    )


def _class_row(name: str, scores: Mapping[str, Any], summary: bool) -> list[str]:
    css = "summary" if summary else ""
    f1 = scores.get("f1", scores.get("f1-score"))
    return [
        cell(name, css=css),
        *(_score_cell(score, css) for score in (scores.get("precision"), scores.get("recall"), f1)),
        cell(format_value("support", scores.get("support")), numeric=True, css=css),
    ]


def _score_cell(value: Any, css: str) -> str:
    """A score in [0, 1] with a bar behind it as wide as the score."""
    score = finite(value)
    if score is None:
        return cell("–", numeric=True, css=css)
    width = min(max(score, 0.0), 1.0) * 100
    return cell(f"{score:.3f}", numeric=True, css=f"score {css}".strip(), style=f"--v:{width:.1f}%")


def _confusion_cell(value: float, row_total: float, diagonal: bool) -> str:
    share = value / row_total if row_total else 0.0
    style = f"background:rgba(31,119,180,{share:.3f})"
    if share > 0.55:
        style += ";color:#fff"
    if diagonal:
        style += ";font-weight:700"
    return cell(format_count(value), numeric=True, title=f"{share:.1%} of the row", style=style)


def _example_cell(key: str, value: Any) -> str:
    if key == "probability" and (probability := finite(value)) is not None:
        return cell(f"{probability:.2f}", numeric=True)
    if key != "text":
        return cell(format_value(key, value))
    text = "" if value is None else str(value)
    return cell(_cut(text, TEXT_CHARS), css="text", title=text if len(text) > TEXT_CHARS else None)


def _listed(value: Any) -> Sequence[Any]:
    """A list-like metric (a list, or a numpy array as scikit-learn returns it); missing → ``[]``."""
    return [] if value is None else value


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, leaf value)`` pairs of a nested mapping; an empty mapping is a leaf."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def _raw(value: Any) -> str:
    """A config value as written: strings as they are, everything else as JSON (``str`` where JSON cannot)."""
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
