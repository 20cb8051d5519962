"""Sequence classification: model with labels, evaluation, metrics, prediction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn

from lorakit.artifacts import find_artifact_folder, load_adapted_model, read_adapter_artifact, read_artifact_info
from lorakit.errors import LorakitError
from lorakit.models import load_model, load_tokenizer
from lorakit.task_kind import TaskKind


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[float, int, np.ndarray]:
    """Run `model` over batches; returns (summed loss, examples, probabilities (examples, classes)).

    Batches without "labels" contribute no loss.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, count, chunks = 0.0, 0, []
    for batch in batches:
        batch = {key: value.to(device) for key, value in batch.items()}
        labels = batch.pop("labels", None)
        with autocast or contextlib.nullcontext():
            logits = model(**batch).logits.float()
        if labels is not None:
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        count += logits.shape[0]
        chunks.append(torch.softmax(logits, dim=-1).cpu().numpy())
    model.train(was_training)
    probabilities = np.concatenate(chunks) if chunks else np.zeros((0, 0))
    return loss_sum, count, probabilities


def classification_metrics(labels: Sequence[int], predicted: Sequence[int], label_names: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix
    (rows: true label, columns: predicted), over all `label_names` even when some never occur."""
    indices = list(range(len(label_names)))
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=indices, zero_division=0)
    return {
        "accuracy": float((labels == predicted).mean()) if len(labels) else 0.0,
        "macro_f1": float(np.mean(f1)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion_matrix(labels, predicted, labels=indices).tolist(),
        "label_names": list(label_names),
    }


@dataclass
class TrainedClassifier:
    """A classifier ready to predict: model (eval mode), tokenizer and the run's facts."""

    model: nn.Module
    tokenizer: object
    label_names: list[str]
    max_length: int
    folder: Path
    text_pair: bool = False


def load_trained_classifier(path: str | Path, device: torch.device | str = "cpu") -> TrainedClassifier:
    """Load what `lorakit train` wrote: a run folder, its `adapter/` or `model/`, or any PEFT
    SEQ_CLS adapter folder (labels then come from the head's size as LABEL_0, LABEL_1, ...).

    Raises:
        LorakitError: the folder holds neither an adapter nor a lorakit model, or its model, base
            model or tokenizer cannot be loaded.
    """
    folder = find_artifact_folder(Path(path))
    info = read_artifact_info(folder)
    if (folder / "adapter_config.json").is_file():
        artifact = read_adapter_artifact(folder)
        if artifact.kind is not TaskKind.CLASSIFICATION:
            raise LorakitError(
                f"{folder} holds a {artifact.task_type} adapter, not a classifier; use lorakit generate for it"
            )
        label_names = artifact.label_names or ["LABEL_0", "LABEL_1"]
        model = load_adapted_model(artifact)
        tokenizer = load_tokenizer(artifact.base_model)
    elif (folder / "config.json").is_file():
        model = load_model(str(folder), TaskKind.CLASSIFICATION.peft_type)
        tokenizer = load_tokenizer(str(folder))
        label_names = info.label_names or [model.config.id2label[i] for i in range(model.config.num_labels)]
    else:
        raise LorakitError(f"{path} holds no adapter (adapter_config.json) or model (config.json) from lorakit train")
    model.to(device).eval()
    return TrainedClassifier(model, tokenizer, list(label_names), info.max_length or 256, folder, info.text_pair)


def predict_texts(
    classifier: TrainedClassifier, texts: Sequence[str], text_pairs: Sequence[str] | None = None, batch_size: int = 32
) -> list[dict]:
    """Label and probabilities for each text: `[{"label", "probability", "probabilities"}]`."""
    results = []
    device = next(classifier.model.parameters()).device
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        pairs = list(text_pairs[start : start + batch_size]) if text_pairs is not None else None
        batch = classifier.tokenizer(
            chunk, pairs, truncation=True, max_length=classifier.max_length, padding=True, return_tensors="pt"
        ).to(device)
        with torch.no_grad():
            probabilities = torch.softmax(classifier.model(**batch).logits.float(), dim=-1).cpu()
        for row in probabilities:
            best = int(row.argmax())
            results.append(
                {
                    "label": classifier.label_names[best],
                    "probability": float(row[best]),
                    "probabilities": {name: float(p) for name, p in zip(classifier.label_names, row, strict=True)},
                }
            )
    return results
