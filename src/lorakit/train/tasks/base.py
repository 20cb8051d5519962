"""What the training loop asks of a task, so one loop trains classifiers, causal LMs and seq2seq models.

The loop owns optimisation, distribution, checkpoints and the run folder; a task owns its data,
its model head, how a split is scored, what counts as "better", and what its report shows. Data
flows through arguments and return values only:

    data    = task.load_data(tokenizer)                    tokenized splits + the raw examples + facts
    model   = task.build_model(data, dtype)                the base with the task's head
    loss    = task.training_loss(model, batch)             one micro-batch (a mean over
    terms   = task.loss_terms(batch)                       this many terms)
    part    = task.evaluate_shard(model, rows, collate, autocast)     this rank's partial sums (picklable)
    result  = task.combine(parts, split_rows, data)        metrics of the whole split
    task.is_better(result, best)                           keeps the best weights
    task.write_report(run_dir, data, outcome)              plots and report.html
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lorakit.task_kind import TaskKind
from lorakit.train.config import TrainConfig

Rows = list[dict[str, Any]]  # tokenized examples: dicts of int lists, "input_ids" in each
Collate = Callable[[Rows], dict[str, torch.Tensor]]  # rows → a padded batch
Autocast = contextlib.AbstractContextManager  # the compute-precision context of forward passes


@dataclass
class TaskData:
    """A task's data, ready for the loop.

    splits: "train", "validation", "test" → tokenized rows (dicts of int lists; "input_ids" in each).
    raw: the same splits untokenized, in the same order (what the report and samples read).
    source / notes: what was loaded and what the loader did to it.
    label_names: the classes, in head order (classification only).
    """

    splits: dict[str, list[dict[str, Any]]]
    raw: dict[str, Any]
    source: str
    notes: list[str] = field(default_factory=list)
    label_names: list[str] | None = None


@dataclass
class Outcome:
    """What a finished run hands its task's report: metrics.json, history.json, the test result,
    and the held-out samples before and after training (generation tasks)."""

    metrics: dict[str, Any]
    history: dict[str, list]
    test: dict[str, Any]
    samples_before: list | None = None
    samples_after: list | None = None


class LossModule(nn.Module):
    """A model and its task's training loss as one module: `LossModule(model, loss)(batch)` is
    `loss(model, batch)`. The loop hands this to accelerate, so a DDP (or FSDP) wrapper sees the
    whole loss computation as one forward, however the loss calls into the model."""

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar training loss of one micro-batch."""
        return self.loss(self.model, batch)


class Task(ABC):
    """Base of the training tasks: one subclass per `TaskKind`."""

    kind: ClassVar[TaskKind]
    # Which validation value picks the best weights, and whether higher is better.
    selection_metric: ClassVar[str] = "loss"
    higher_is_better: ClassVar[bool] = False
    # Validate once before the first step too (generation: the base model's loss to fall from).
    evaluate_before_training: ClassVar[bool] = False

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    @abstractmethod
    def load_data(self, tokenizer: Any) -> TaskData:
        """Load, split and tokenize `config.data` (raises LorakitError for bad data)."""

    @abstractmethod
    def collator(self, tokenizer: Any) -> Collate:
        """Rows → a padded batch of tensors the model (and `training_loss`) takes."""

    @abstractmethod
    def build_model(self, data: TaskData, dtype: torch.dtype, empty: bool = False) -> nn.Module:
        """The base model with the head this task trains, before quantization and LoRA; `dtype` is
        what the frozen weights will be stored in (a task whose new head trains may load in fp32);
        `empty`: parameters on the meta device, nothing read (models/loading.py `load_model`)."""

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss one micro-batch trains on (the model's own by default)."""
        return model(**batch).loss

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> int:
        """How many terms `training_loss` averages over `batch` (rows by default): the weight of a
        piece of a micro-batch (train/pieces.py)."""
        return int(batch["input_ids"].shape[0])

    def eval_rows(self) -> int:
        """Rows per forward when scoring: `evaluate_shard` runs its rows in batches of this many."""
        return self.config.batch_size

    @abstractmethod
    def evaluate_shard(self, model: nn.Module, rows: Rows, collate: Collate, autocast: Autocast) -> Any:
        """This rank's partial result over `rows` (picklable: ranks gather them)."""

    @abstractmethod
    def combine(self, parts: list[tuple[list[int], Any]], split: list[dict[str, Any]], data: TaskData) -> dict:
        """The metrics of a whole split from every rank's (row indices, partial result); "loss" included."""

    @abstractmethod
    def eval_entry(self, result: dict[str, Any]) -> dict[str, Any]:
        """The values of one validation result that go into history.json."""

    def is_better(self, result: dict[str, Any], best: dict[str, Any] | None) -> bool:
        """Whether `result` beats the best validation entry so far (ties: the lower loss wins)."""
        if best is None:
            return True
        value, old = result[self.selection_metric], best[self.selection_metric]
        if value == old:
            return result["loss"] < best["loss"]
        return value > old if self.higher_is_better else value < old

    @abstractmethod
    def test_metrics(self, result: dict[str, Any]) -> dict[str, Any]:
        """The test values that go into metrics.json."""

    def sample_metrics(self, before: list | None, after: list | None) -> dict[str, Any]:
        """Numbers about the report's samples that go into metrics.json (none by default)."""
        return {}

    @abstractmethod
    def artifact_facts(self, data: TaskData) -> dict[str, Any]:
        """This task's `ArtifactInfo` fields (lorakit.json) for eval, predict, generate, merge, serve."""

    def samples(self, model: nn.Module, tokenizer: Any, autocast: Autocast, data: TaskData) -> list | None:
        """Model outputs on a few held-out inputs for the report (generation tasks), or None."""
        return None

    @abstractmethod
    def write_report(self, run_dir: Path, data: TaskData, outcome: Outcome) -> Path:
        """Write the plots and report.html (and any task files); returns the report's path."""
