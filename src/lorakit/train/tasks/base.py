"""What the training loop asks of a task, so one loop trains classifiers, causal LMs and seq2seq models.

The loop owns optimisation, distribution, checkpoints and the run folder; a task owns its data,
its model head, how a split is scored, what counts as "better", and what its report shows:

    data      = task.load_data(tokenizer)            tokenized train/validation/test + facts
    model     = task.build_model()                   the base with the task's head
    part      = task.evaluate_shard(model, rows)     this rank's partial sums (picklable)
    result    = task.combine(parts, split_rows)      metrics of the whole split (parts: (indices, part) per rank)
    task.is_better(result, best)                     keeps the best weights
    task.write_report(...)                           plots and report.html
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.train.config import TrainConfig


@dataclass
class TaskData:
    """Tokenized splits (lists of dicts of int lists) plus what the report and metrics need."""

    splits: dict[str, list[dict[str, Any]]]
    raw: dict[str, list[Any]]  # the untokenized examples, in the same order
    source: str
    notes: list[str] = field(default_factory=list)


class Task:
    """Base of the three training tasks; each method's contract is in the module docstring."""

    name: str
    peft_task_type: str
    # Which validation value picks the best weights, and whether higher is better.
    selection_metric: str = "loss"
    higher_is_better: bool = False
    # Validate once before the first step too (generation: the base model's loss to fall from).
    evaluate_before_training: bool = False

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def load_data(self, tokenizer: Any) -> TaskData:
        raise NotImplementedError

    def collator(self, tokenizer: Any) -> Any:
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss one micro-batch trains on (the model's own by default)."""
        return model(**batch).loss

    def evaluate_shard(
        self, model: nn.Module, rows: list[dict[str, Any]], collate: Any, autocast: contextlib.AbstractContextManager
    ) -> Any:
        raise NotImplementedError

    def combine(self, parts: list[tuple[list[int], Any]], split: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def eval_entry(self, result: dict[str, Any]) -> dict[str, Any]:
        """The values of one validation result that go into history.json."""
        return {key: result[key] for key in ("loss", self.selection_metric)}

    def is_better(self, result: dict[str, Any], best: dict[str, Any] | None) -> bool:
        if best is None:
            return True
        value, old = result[self.selection_metric], best[self.selection_metric]
        if value == old:
            return result["loss"] < best["loss"]
        return value > old if self.higher_is_better else value < old

    def test_metrics(self, result: dict[str, Any]) -> dict[str, Any]:
        """The test values that go into metrics.json."""
        raise NotImplementedError

    def sample_metrics(self, before: list | None, after: list | None) -> dict[str, Any]:
        """Numbers about the report's samples that go into metrics.json."""
        return {}

    def model_info(self) -> dict[str, Any]:
        """Task facts saved next to the adapter (lorakit.json) for eval/predict/generate/merge."""
        return {}

    def samples(self, model: nn.Module, tokenizer: Any, autocast: contextlib.AbstractContextManager) -> list | None:
        """Model outputs on a few held-out inputs for the report (generation tasks), or None."""
        return None

    def write_report(
        self,
        run_dir: Path,
        metrics: dict[str, Any],
        history: dict[str, list],
        test: dict[str, Any],
        samples_before: list | None,
        samples_after: list | None,
    ) -> Path:
        raise NotImplementedError
