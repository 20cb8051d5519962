"""The PNG charts: real images of the promised size, readable labels, and a "no data" panel for empty input."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from report_samples import TWENTY_NEWSGROUPS

from lorakit.errors import LorakitError
from lorakit.report import (
    plot_comparison_bars,
    plot_confusion_matrix,
    plot_loss_curves,
    plot_metric_curve,
    plot_scatter,
)
from lorakit.report.canvas import DPI, WIDE
from lorakit.report.compare import scatter_figure
from lorakit.report.confusion import confusion_figure, confusion_values
from lorakit.report.curves import loss_figure, metric_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDE_PIXELS = (round(WIDE[1] * DPI), round(WIDE[0] * DPI))  # (height, width)

RUNS = [
    {"name": "LoRA r=8", "accuracy": 0.812, "macro_f1": 0.806, "trainable_params": 74498},
    {"name": "LoRA r=16 all-linear", "accuracy": 0.824, "macro_f1": 0.82, "trainable_params": 589826},
    {"name": "full fine-tuning", "accuracy": 0.831, "macro_f1": 0.829, "trainable_params": 22713986},
    {"name": "head only", "accuracy": 0.71, "macro_f1": 0.70, "trainable_params": 770},
]


def read_png(path: Path, min_bytes: int = 5_000) -> np.ndarray:
    """The image as ``(height, width, channels)``, after checking it is a real PNG with content."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes
    pixels = matplotlib.image.imread(path)
    assert pixels.std() > 0.02, "the image is (nearly) one flat colour"
    return pixels


def texts(figure) -> list[str]:
    """Every text drawn in a figure: titles, labels, annotations, legend entries, tick labels."""
    figure.draw_without_rendering()
    return [text.get_text() for text in figure.findobj(lambda artist: hasattr(artist, "get_text"))]


def test_loss_curves_png(tmp_path, history):
    path = plot_loss_curves(history, tmp_path / "plots" / "loss.png")
    assert path == tmp_path / "plots" / "loss.png"
    assert read_png(path, min_bytes=20_000).shape[:2] == WIDE_PIXELS


def test_loss_curves_show_train_validation_and_epochs(history):
    ax = loss_figure(history).axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert "train" in labels
    assert "validation (best 0.47 at step 160)" in labels
    assert [child.get_xlabel() for child in ax.child_axes] == ["epoch"]
    assert ax.get_xlabel() == "step"


def test_loss_curves_smooth_many_points(history):
    history["train"] = [dict(record, step=i + 1, epoch=(i + 1) / 100) for i, record in enumerate(history["train"] * 3)]
    ax = loss_figure(history).axes[0]
    assert "train (smoothed)" in [line.get_label() for line in ax.get_lines()]


def test_no_epoch_axis_when_epochs_are_whole_indices(history):
    for record in history["train"]:
        record["epoch"] = int(record["step"] // 80)
    ax = loss_figure(history).axes[0]
    assert ax.child_axes == []


def test_metric_curve_png(tmp_path, history):
    path = plot_metric_curve(history, "accuracy", tmp_path / "accuracy.png")
    assert read_png(path, min_bytes=15_000).shape[:2] == WIDE_PIXELS


def test_metric_curve_marks_best_and_writes_values(history):
    figure = metric_figure(history, "accuracy")
    drawn = texts(figure)
    assert {"0.781", "0.812", "0.806"} <= set(drawn)
    assert "best 0.812 (epoch 2)" in drawn
    assert figure.axes[0].get_xlabel() == "epoch"


def test_metric_curve_loss_is_best_when_lowest(history):
    assert "best 0.470 (epoch 2)" in texts(metric_figure(history, "loss"))


def test_metric_curve_by_step_without_epochs(history):
    for record in history["eval"]:
        del record["epoch"]
    assert metric_figure(history, "macro_f1").axes[0].get_xlabel() == "step"


@pytest.mark.parametrize(
    "history",
    [None, {}, {"train": [], "eval": []}, {"eval": [{"step": 5, "loss": float("nan")}]}, {"eval": [{"epoch": 1}]}],
    ids=["none", "empty", "empty-splits", "nan", "no-values"],
)
def test_empty_history_gives_no_data_png(tmp_path, history):
    loss = read_png(plot_loss_curves(history, tmp_path / "loss.png"), min_bytes=2_000)
    accuracy = read_png(plot_metric_curve(history, "accuracy", tmp_path / "accuracy.png"), min_bytes=2_000)
    assert loss.shape[:2] == accuracy.shape[:2] == WIDE_PIXELS
    assert "No loss logged yet" in texts(loss_figure(history))
    assert "No accuracy in the evaluations yet" in texts(metric_figure(history, "accuracy"))


def test_confusion_matrix_two_classes(tmp_path, metrics):
    path = plot_confusion_matrix(metrics["confusion_matrix"], metrics["label_names"], tmp_path / "cm.png")
    height, width = read_png(path, min_bytes=10_000).shape[:2]
    assert (height, width) == (495, 627)  # 4.5 × 5.7 in at 110 dpi: the smallest size
    drawn = texts(confusion_figure(metrics["confusion_matrix"], metrics["label_names"]))
    assert {"430", "110", "95", "645", "rotten", "fresh", "predicted", "true", "examples"} <= set(drawn)


def test_confusion_matrix_normalised_rows_sum_to_one(tmp_path, metrics):
    values = confusion_values(metrics["confusion_matrix"], normalize=True)
    np.testing.assert_allclose(values.sum(axis=1), 1.0)
    drawn = texts(confusion_figure(metrics["confusion_matrix"], metrics["label_names"], normalize=True))
    assert {"0.80", "0.20", "0.13", "0.87", "share of true class"} <= set(drawn)
    read_png(plot_confusion_matrix([[3, 0], [0, 0]], ["a", "b"], tmp_path / "zero-row.png", normalize=True))


def test_confusion_matrix_twenty_classes_is_readable(tmp_path):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 30, (20, 20))
    matrix[np.diag_indices(20)] = rng.integers(200, 900, 20)
    path = plot_confusion_matrix(matrix.tolist(), TWENTY_NEWSGROUPS, tmp_path / "cm20.png")
    height, width = read_png(path, min_bytes=50_000).shape[:2]
    assert (height, width) == (1298, 1430)  # 13.0 × 11.8 in: grows with the classes

    figure = confusion_figure(matrix, TWENTY_NEWSGROUPS)
    figure.draw_without_rendering()
    ax = figure.axes[0]
    renderer = figure.canvas.get_renderer()
    for tick in ax.get_xticklabels() + ax.get_yticklabels():
        box = tick.get_window_extent(renderer)
        assert tick.get_fontsize() >= 7
        assert figure.bbox.x0 <= box.x0 and box.x1 <= figure.bbox.x1 and figure.bbox.y0 <= box.y0
    # Class names down the side are horizontal: their boxes must not touch.
    rows = [tick.get_window_extent(renderer) for tick in ax.get_yticklabels()]
    assert not any(a.overlaps(b) for a, b in itertools.combinations(rows, 2)), "class names overlap"
    # Names along the bottom run at 45°: parallel lines one cell apart, i.e. cell width × sin 45° apart,
    # which must leave room for a line of text.
    xs = [ax.transData.transform((j, 0))[0] for j in range(20)]
    line_height = ax.get_xticklabels()[0].get_fontsize() * DPI / 72
    assert all(tick.get_rotation() == 45 for tick in ax.get_xticklabels())
    assert (xs[1] - xs[0]) * math.sin(math.pi / 4) > 1.2 * line_height
    cell_texts = [text for text in ax.texts]
    assert len(cell_texts) == 400
    assert {text.get_text() for text in cell_texts} >= {str(v) for v in matrix[np.diag_indices(20)]}
    assert "comp.sys.ibm.pc.hardware" in [tick.get_text() for tick in ax.get_yticklabels()]


def test_confusion_matrix_label_text_is_literal(tmp_path):
    """Dollar signs in class names are text, not mathtext (which would fail or garble them)."""
    path = plot_confusion_matrix([[1, 2], [3, 4]], ["$5 off", "costs $10"], tmp_path / "dollars.png")
    read_png(path)
    labels = [
        tick.get_text()
        for tick in confusion_figure([[1, 2], [3, 4]], ["$5 off", "costs $10"]).axes[0].get_xticklabels()
    ]
    assert labels == [r"\$5 off", r"costs \$10"]


def test_confusion_matrix_without_names_numbers_classes():
    labels = [tick.get_text() for tick in confusion_figure([[1, 2], [3, 4]], None).axes[0].get_yticklabels()]
    assert labels == ["0", "1"]


def test_confusion_matrix_empty_gives_no_data_png(tmp_path):
    read_png(plot_confusion_matrix([], [], tmp_path / "empty.png"), min_bytes=2_000)
    assert "No confusion matrix computed" in texts(confusion_figure([], None))


@pytest.mark.parametrize(
    ("matrix", "names", "message"),
    [
        ([[1, 2], [3, 4]], ["a", "b", "c"], "2 classes but 3 label names"),
        ([[1, 2, 3], [4, 5, 6]], ["a", "b"], "must be square"),
        ([[1, 2], [3]], ["a", "b"], "n × n numbers"),
    ],
)
def test_confusion_matrix_inconsistent_input_is_an_error(tmp_path, matrix, names, message):
    with pytest.raises(LorakitError, match=message):
        plot_confusion_matrix(matrix, names, tmp_path / "bad.png")


def test_comparison_bars(tmp_path):
    path = plot_comparison_bars(RUNS, ["accuracy", "macro_f1"], tmp_path / "bars.png")
    assert read_png(path, min_bytes=15_000).shape[:2] == (407, 671)  # 6.1 in wide: 8 bars


def test_comparison_bars_skip_missing_values(tmp_path):
    rows = [{"name": "a", "accuracy": 0.8}, {"name": "b", "macro_f1": float("nan")}, {"name": "c"}]
    read_png(plot_comparison_bars(rows, ["accuracy", "macro_f1"], tmp_path / "bars.png"))


def test_scatter_log_axis_and_names_inside(tmp_path):
    read_png(plot_scatter(RUNS, "trainable_params", "accuracy", "name", tmp_path / "scatter.png"))
    figure = scatter_figure(RUNS, "trainable_params", "accuracy", "name")
    figure.draw_without_rendering()
    ax = figure.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "Trainable params (log scale)"
    renderer = figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    boxes = [text.get_window_extent(renderer) for text in ax.texts]
    assert len(boxes) == 4
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), "point names overlap"


def test_scatter_linear_when_asked_or_when_x_not_positive():
    assert scatter_figure(RUNS, "trainable_params", "accuracy", None, logx=False).axes[0].get_xscale() == "linear"
    rows = [{"x": 0, "y": 1}, {"x": 2, "y": 3}]
    assert scatter_figure(rows, "x", "y").axes[0].get_xscale() == "linear"


@pytest.mark.parametrize("rows", [[], [{"name": "a"}], [{"name": "a", "accuracy": math.inf, "trainable_params": 1}]])
def test_comparisons_without_data_give_no_data_png(tmp_path, rows):
    read_png(plot_comparison_bars(rows, ["accuracy"], tmp_path / "bars.png"), min_bytes=2_000)
    read_png(plot_scatter(rows, "trainable_params", "accuracy", "name", tmp_path / "scatter.png"), min_bytes=2_000)
    assert "No runs with both values" in texts(scatter_figure(rows, "trainable_params", "accuracy", "name"))


def test_plots_in_threads_match_plots_in_sequence(tmp_path, history, metrics):
    """No pyplot state is shared: charts drawn at once in threads are the charts drawn one by one."""
    jobs = [
        lambda d: plot_loss_curves(history, d / "loss.png"),
        lambda d: plot_metric_curve(history, "accuracy", d / "accuracy.png"),
        lambda d: plot_confusion_matrix(metrics["confusion_matrix"], metrics["label_names"], d / "cm.png"),
        lambda d: plot_scatter(RUNS, "trainable_params", "accuracy", "name", d / "scatter.png"),
    ]
    (tmp_path / "seq").mkdir()
    (tmp_path / "par").mkdir()
    sequential = [job(tmp_path / "seq") for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(lambda job: job(tmp_path / "par"), jobs * 3))
    for one, other in zip(sequential * 3, parallel, strict=True):
        np.testing.assert_array_equal(matplotlib.image.imread(one), matplotlib.image.imread(other))


def test_report_layer_uses_no_pyplot_and_no_higher_layer(tmp_path):
    """Importing and plotting loads neither pyplot (global GUI state) nor lorakit.train / lorakit.cli."""
    code = (
        "import sys; from lorakit.report import plot_loss_curves, write_report; "
        f"plot_loss_curves({{}}, {str(tmp_path / 'x.png')!r}); "
        "bad = [m for m in sys.modules if m == 'matplotlib.pyplot' or m.startswith(('lorakit.train', 'lorakit.cli'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
