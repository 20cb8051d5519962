"""The HTML reports: one self-contained file, every number present, every dataset text escaped."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from report_samples import TWENTY_NEWSGROUPS

from lorakit.errors import LorakitError
from lorakit.report import (
    plot_comparison_bars,
    plot_confusion_matrix,
    plot_loss_curves,
    plot_metric_curve,
    write_report,
    write_table_report,
)

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Structure(HTMLParser):
    """Collects tags and attributes, and fails on a closing tag that does not match the open one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Structure:
    """The document, checked to be well nested and closed."""
    parser = Structure()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    assert parser.open == [], f"unclosed tags: {parser.open}"
    return parser


def assert_self_contained(document: str, parsed: Structure) -> None:
    """No scripts, no stylesheet links, nothing fetched from a URL; a CSP forbids it anyway."""
    assert "http://" not in document and "https://" not in document
    assert not [tag for tag, _ in parsed.tags if tag in ("script", "link", "iframe", "object", "embed")]
    for _, attrs in parsed.tags:
        for name in ("src", "href"):
            assert attrs.get(name) is None or attrs[name].startswith("data:"), attrs
    assert "default-src 'none'; img-src data:" in document


@pytest.fixture
def images(tmp_path, history, metrics) -> dict[str, Path]:
    return {
        "Loss": plot_loss_curves(history, tmp_path / "loss.png"),
        "Validation accuracy": plot_metric_curve(history, "accuracy", tmp_path / "accuracy.png"),
        "Confusion matrix": plot_confusion_matrix(
            metrics["confusion_matrix"], metrics["label_names"], tmp_path / "cm.png"
        ),
    }


@pytest.fixture
def report(tmp_path, history, metrics, config, misclassified, images) -> Path:
    return write_report(
        tmp_path / "out" / "report.html",
        title="MiniLM <LoRA> r=8",
        metrics=metrics,
        history=history,
        config=config,
        misclassified=misclassified,
        images=images,
    )


def test_report_is_one_self_contained_file(report):
    assert report.is_file() and report.name == "report.html"
    document = report.read_text(encoding="utf-8")
    assert document.startswith("<!DOCTYPE html>")
    assert_self_contained(document, parse(report))


def test_report_embeds_each_image_byte_for_byte(report, images):
    parsed = parse(report)
    sources = [attrs["src"] for tag, attrs in parsed.tags if tag == "img"]
    assert len(sources) == len(images)
    for source, (name, path) in zip(sources, images.items(), strict=True):
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]) == path.read_bytes()
        assert name in parsed.text


def test_report_headline_numbers(report):
    text = " ".join(parse(report).text)
    for shown in (
        "0.813",  # accuracy
        "0.805",  # macro-F1
        "0.4512",  # test loss
        "74,498",  # trainable params
        "0.33 % of 22.8M",
        "294.2 KiB",  # adapter size
        "5 min 12 s",  # train time
        "5,210",  # tokens/s
        "1.1 GiB",  # peak memory
        "all-MiniLM-L6-v2",
        "rotten-tomatoes",
        "bf16",
    ):
        assert shown in text, shown


def test_report_tables(report):
    text = parse(report).text
    # per class: precision, recall, F1, support of "fresh"
    row = text.index("fresh")
    assert text[row : row + 5] == ["fresh", "0.854", "0.872", "0.863", "740"]
    # confusion matrix rows with their totals
    assert "true ↓ / predicted →" in text
    row = text.index("rotten", text.index("Confusion matrix"))
    for count in ("430", "110", "95", "645", "540", "740"):
        assert count in text[row:]
    # evaluations during training, and the resolved config flattened to dotted keys
    assert {"Evaluations during training", "0.781", "0.812", "lora.r", "train.lr", "0.0005"} <= set(text)
    assert '["query", "value"]' in text


def test_report_escapes_dataset_text_and_title(report):
    document = report.read_text(encoding="utf-8")
    assert "<script" not in document
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &amp; fun" in document
    assert "<title>MiniLM &lt;LoRA&gt; r=8</title>" in document
    parsed = parse(report)
    assert "great <script>alert('pwned')</script> & fun" in parsed.text  # shown to the reader as written


def test_report_cuts_long_texts_and_keeps_them_on_hover(tmp_path):
    long_text = "word " * 200 + '"quoted" <b>end</b>'
    path = write_report(tmp_path / "r.html", title="t", misclassified=[{"text": long_text, "label": "a"}])
    parsed = parse(path)
    cells = [attrs for tag, attrs in parsed.tags if tag == "td" and attrs.get("class") == "text"]
    assert cells[0]["title"] == long_text
    assert long_text[:399] + "…" in parsed.text


@pytest.mark.parametrize(
    "metrics",
    [
        None,
        {},
        {"accuracy": 0.9},
        {"accuracy": float("nan"), "loss": None, "trainable_params": 10},
        {"per_class": {"a": {"precision": 0.5}}, "confusion_matrix": []},
    ],
    ids=["none", "empty", "accuracy-only", "nan-and-none", "partial-tables"],
)
def test_report_with_missing_keys(tmp_path, metrics):
    path = write_report(tmp_path / "r.html", title="partial", metrics=metrics)
    parsed = parse(path)
    assert_self_contained(path.read_text(encoding="utf-8"), parsed)
    if not metrics:
        assert "Nothing recorded for this run yet." in parsed.text


def test_report_takes_sklearn_classification_report_and_lists_other_values(tmp_path):
    per_class = {
        "neg": {"precision": 0.8, "recall": 0.7, "f1-score": 0.75, "support": 10},
        "pos": {"precision": 0.6, "recall": 0.9, "f1-score": 0.72, "support": 12},
        "accuracy": 0.73,
        "macro avg": {"precision": 0.7, "recall": 0.8, "f1-score": 0.735, "support": 22},
    }
    metrics = {"per_class": per_class, "label_names": ["pos", "neg"], "eval_samples": 1066, "run_id": "<x>"}
    path = write_report(tmp_path / "r.html", title="t", metrics=metrics)
    text = parse(path).text
    assert text.index("pos") < text.index("neg") < text.index("macro avg")
    assert text[text.index("macro avg") : text.index("macro avg") + 5] == ["macro avg", "0.700", "0.800", "0.735", "22"]
    assert {"Other values", "eval_samples", "1,066", "<x>"} <= set(text)


def test_report_twenty_classes(tmp_path):
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 50, (20, 20)).tolist()
    metrics = {"confusion_matrix": matrix, "label_names": TWENTY_NEWSGROUPS}
    image = plot_confusion_matrix(matrix, TWENTY_NEWSGROUPS, tmp_path / "cm20.png")
    path = write_report(tmp_path / "r.html", title="t", metrics=metrics, images={"Confusion": image})
    parsed = parse(path)
    figures = [attrs for tag, attrs in parsed.tags if tag == "figure"]
    assert figures == [{"class": "wide"}]  # a big matrix spans the whole row
    headers = [attrs for tag, attrs in parsed.tags if tag == "th" and attrs.get("class") == "vertical"]
    assert [attrs["title"] for attrs in headers] == TWENTY_NEWSGROUPS


@pytest.mark.parametrize(
    ("images", "message"),
    [({"x": "missing.png"}, "does not exist"), ({"x": "notes.txt"}, "is not one of")],
)
def test_report_bad_images_are_errors(tmp_path, images, message):
    (tmp_path / "notes.txt").write_text("hi")
    images = {name: tmp_path / file for name, file in images.items()}
    with pytest.raises(LorakitError, match=message):
        write_report(tmp_path / "r.html", title="t", images=images)


def test_report_confusion_names_must_match(tmp_path):
    with pytest.raises(LorakitError, match="2 classes but 1 label names"):
        write_report(
            tmp_path / "r.html", title="t", metrics={"confusion_matrix": [[1, 2], [3, 4]], "label_names": ["a"]}
        )


RUNS = [
    {"name": "LoRA r=8", "r": 8, "accuracy": 0.812, "macro_f1": 0.82, "adapter_bytes": 301234, "train_seconds": 312.5},
    {"name": "full <FT>", "r": None, "accuracy": 0.831, "macro_f1": 0.7, "adapter_bytes": 90.9e6, "train_seconds": 655},
]


def test_table_report(tmp_path):
    image = plot_comparison_bars(RUNS, ["accuracy", "macro_f1"], tmp_path / "bars.png")
    path = write_table_report(tmp_path / "compare.html", title="LoRA vs full", rows=RUNS, images={"Bars": image})
    document = path.read_text(encoding="utf-8")
    parsed = parse(path)
    assert_self_contained(document, parsed)
    assert document.count("data:image/png;base64,") == 1
    assert "full &lt;FT&gt;" in document
    headers = [
        text for text in parsed.text if text in {"Name", "R", "Accuracy", "Macro-F1", "Adapter size", "Train time"}
    ]
    assert headers == ["Name", "R", "Accuracy", "Macro-F1", "Adapter size", "Train time"]
    for shown in ("0.812", "0.82", "0.70", "294.2 KiB", "86.7 MiB", "5 min 12 s", "10 min 55 s", "–"):
        assert shown in parsed.text, shown


def test_table_report_chosen_columns_and_no_rows(tmp_path):
    path = write_table_report(tmp_path / "t.html", title="t", rows=RUNS, columns=["accuracy", "name"])
    text = parse(path).text
    assert text.index("Accuracy") < text.index("Name")
    assert "R" not in text and "Train time" not in text
    empty = write_table_report(tmp_path / "e.html", title="t", rows=[])
    assert "No runs to show." in parse(empty).text


def test_only_data_uris_even_with_urls_in_data(tmp_path):
    """A dataset text with a URL is text: no link, no load."""
    path = write_report(
        tmp_path / "r.html", title="t", misclassified=[{"text": "see https://example.com/x.png", "label": "a"}]
    )
    parsed = parse(path)
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", path.read_text(encoding="utf-8"))
    assert not [tag for tag, _ in parsed.tags if tag == "a"]


def test_report_takes_numpy_arrays_as_scikit_learn_returns_them(tmp_path, metrics):
    metrics["confusion_matrix"] = np.array(metrics["confusion_matrix"])
    metrics["label_names"] = np.array(metrics["label_names"])
    metrics["accuracy"] = np.float64(metrics["accuracy"])
    metrics["trainable_params"] = np.int64(metrics["trainable_params"])
    image = plot_confusion_matrix(metrics["confusion_matrix"], metrics["label_names"], tmp_path / "cm.png")
    path = write_report(tmp_path / "r.html", title="t", metrics=metrics, images={"Confusion": image})
    text = parse(path).text
    assert {"0.813", "74,498", "430", "645", "rotten", "fresh"} <= set(text)
