"""Run data shaped as the training loop hands it to the report layer: history, metrics, config, mistakes."""

from __future__ import annotations

import math
from typing import Any

import pytest

STEPS_PER_EPOCH = 80


@pytest.fixture
def history() -> dict[str, list[dict[str, Any]]]:
    """Three epochs of 80 steps: train loss every 10 steps (24 points), an evaluation per epoch."""
    train = [
        {
            "step": step,
            "epoch": step / STEPS_PER_EPOCH,
            "loss": 0.35 + 0.35 * math.exp(-step / 60) + 0.02 * math.sin(step),
            "lr": 1e-4,
        }
        for step in range(10, 3 * STEPS_PER_EPOCH + 1, 10)
    ]
    evals = [
        {"step": 80, "epoch": 1.0, "loss": 0.52, "accuracy": 0.781, "macro_f1": 0.772},
        {"step": 160, "epoch": 2.0, "loss": 0.47, "accuracy": 0.812, "macro_f1": 0.806},
        {"step": 240, "epoch": 3.0, "loss": 0.49, "accuracy": 0.806, "macro_f1": 0.801},
    ]
    return {"train": train, "eval": evals}


@pytest.fixture
def metrics() -> dict[str, Any]:
    """A complete ``metrics.json`` of a binary classification run."""
    return {
        "task": "classification",
        "model": "all-MiniLM-L6-v2",
        "dataset": "rotten-tomatoes",
        "method": "lora",
        "accuracy": 0.8133,
        "macro_f1": 0.8051,
        "loss": 0.4512,
        "per_class": {
            "rotten": {"precision": 0.819, "recall": 0.796, "f1": 0.807, "support": 540},
            "fresh": {"precision": 0.854, "recall": 0.872, "f1": 0.863, "support": 740},
        },
        "confusion_matrix": [[430, 110], [95, 645]],
        "label_names": ["rotten", "fresh"],
        "trainable_params": 74498,
        "total_params": 22788484,
        "trainable_percent": 0.3269,
        "adapter_bytes": 301234,
        "train_seconds": 312.5,
        "tokens_per_second": 5210.3,
        "peak_memory_bytes": 1.2e9,
        "epochs": 3,
        "best_epoch": 2,
        "device": "cpu",
        "precision": "bf16",
    }


@pytest.fixture
def config() -> dict[str, Any]:
    """A resolved run config, nested as the loop keeps it."""
    return {
        "model": {"name": "all-MiniLM-L6-v2", "max_length": 128},
        "lora": {"r": 8, "lora_alpha": 32, "target_modules": ["query", "value"], "task_type": "SEQ_CLS"},
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.0005, "output_dir": "runs/minilm-rt"},
    }


@pytest.fixture
def misclassified() -> list[dict[str, Any]]:
    """Wrong predictions, one of them a text that carries markup."""
    return [
        {
            "text": "great <script>alert('pwned')</script> & fun",
            "label": "fresh",
            "predicted": "rotten",
            "probability": 0.91,
        },
        {
            "text": "a gorgeously shot, emotionally inert film.",
            "label": "rotten",
            "predicted": "fresh",
            "probability": 0.77,
        },
    ]
