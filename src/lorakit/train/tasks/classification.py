"""Training sequence classifiers: labelled texts in, accuracy/F1/confusion matrix and mistakes out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lorakit.data import ClassificationSplit, load_classification_data
from lorakit.data.batching import pad_collate, tokenize_split
from lorakit.inference.classification import classification_metrics, predict_batches
from lorakit.models import load_classifier
from lorakit.report import html, plots
from lorakit.task_kind import TaskKind
from lorakit.train.tasks.base import Autocast, Collate, Outcome, Rows, Task, TaskData

MISCLASSIFIED_SAMPLE = 25


class ClassificationTask(Task):
    """Sequence classification: a new `len(label_names)`-way head, scored by accuracy (best
    weights), macro-F1, per-class precision/recall and the confusion matrix."""

    kind = TaskKind.CLASSIFICATION
    selection_metric = "accuracy"
    higher_is_better = True

    def load_data(self, tokenizer: Any) -> TaskData:
        """Labelled texts split into train/validation/test, tokenized to `max_length`."""
        data = load_classification_data(self.config.data, options=self.config.data_options())
        splits = {
            name: tokenize_split(tokenizer, split, self.config.max_length) for name, split in data.splits().items()
        }
        return TaskData(splits, data.splits(), data.source, data.notes, label_names=data.label_names)

    def collator(self, tokenizer: Any) -> Collate:
        """Padding to the batch's longest row, rounded up to a multiple of 8."""
        # Widths rounded up to a multiple of 8: measured on MiniLM (CPU, bf16), one cached kernel per
        # distinct length grew memory by ~450 MiB in 150 steps; rounding cut that and ran faster.
        return pad_collate(tokenizer, pad_to_multiple_of=8)

    def build_model(self, data: TaskData, dtype: torch.dtype, empty: bool = False) -> nn.Module:
        """The base model with a fresh head over `data.label_names`, loaded in fp32 whatever `dtype`:
        the head trains, and the loop casts the frozen rest afterwards."""
        return load_classifier(self.config.model, data.label_names, empty=empty)

    def eval_rows(self) -> int:
        """Twice the training batch: scoring keeps no activations for backward."""
        return self.config.batch_size * 2

    def evaluate_shard(
        self, model: nn.Module, rows: Rows, collate: Collate, autocast: Autocast
    ) -> tuple[float, np.ndarray]:
        """Summed cross-entropy over `rows` and their probabilities (rows, classes)."""
        size = self.eval_rows()
        batches = (collate(rows[j : j + size]) for j in range(0, len(rows), size))
        loss_sum, _, probabilities = predict_batches(model, batches, autocast)
        return loss_sum, probabilities

    def combine(self, parts: list[tuple[list[int], Any]], split: list[dict[str, Any]], data: TaskData) -> dict:
        """Accuracy, macro-F1, per-class scores, mean loss and every row's probabilities, in split order."""
        every = np.zeros((len(split), len(data.label_names)), dtype=np.float32)
        total_loss = 0.0
        for indices, (loss, probabilities) in parts:
            if len(indices):
                every[indices] = probabilities
            total_loss += loss
        labels = [example["labels"] for example in split]
        metrics = classification_metrics(labels, every.argmax(axis=1), data.label_names)
        return {**metrics, "loss": total_loss / max(len(split), 1), "probabilities": every}

    def eval_entry(self, result: dict[str, Any]) -> dict[str, Any]:
        """Loss, accuracy and macro-F1."""
        return {key: result[key] for key in ("loss", "accuracy", "macro_f1")}

    def test_metrics(self, result: dict[str, Any]) -> dict[str, Any]:
        """Accuracy, macro-F1, loss, per-class scores, the confusion matrix and the label names."""
        keys = ("accuracy", "macro_f1", "loss", "per_class", "confusion_matrix", "label_names")
        return {key: result[key] for key in keys}

    def artifact_facts(self, data: TaskData) -> dict[str, Any]:
        """The label names (head order) and whether inputs are text pairs."""
        return {"label_names": tuple(data.label_names), "text_pair": self.config.text_pair_column is not None}

    def write_report(self, run_dir: Path, data: TaskData, outcome: Outcome) -> Path:
        """Loss and accuracy curves, the confusion matrix and the most confident mistakes."""
        metrics, history = outcome.metrics, outcome.history
        plot_dir = run_dir / "plots"
        images = {
            "Loss": plots.plot_loss_curves(history, plot_dir / "loss.png"),
            "Validation accuracy": plots.plot_metric_curve(history, "accuracy", plot_dir / "accuracy.png"),
            "Confusion matrix (test)": plots.plot_confusion_matrix(
                metrics["confusion_matrix"], metrics["label_names"], plot_dir / "confusion_matrix.png"
            ),
        }
        return html.write_report(
            run_dir / "report.html",
            title=f"lorakit run {run_dir.name}",
            metrics=metrics,
            history=history,
            config=self.config.to_dict(),
            misclassified=misclassified_sample(data.raw["test"], outcome.test["probabilities"], metrics["label_names"]),
            images=images,
        )


def misclassified_sample(
    split: ClassificationSplit, probabilities: np.ndarray, label_names: list[str], limit: int = MISCLASSIFIED_SAMPLE
) -> list[dict[str, Any]]:
    """The most confidently wrong test predictions first: the ones most worth reading."""
    predicted = probabilities.argmax(axis=1)
    wrong = [i for i, (p, y) in enumerate(zip(predicted, split.labels, strict=True)) if p != y]
    wrong.sort(key=lambda i: -probabilities[i, predicted[i]])
    return [
        {
            "text": split.texts[i] if split.text_pairs is None else f"{split.texts[i]} ‖ {split.text_pairs[i]}",
            "label": label_names[split.labels[i]],
            "predicted": label_names[predicted[i]],
            "probability": float(probabilities[i, predicted[i]]),
        }
        for i in wrong[:limit]
    ]
