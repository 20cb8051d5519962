"""`TrainState`: where a run is, and what it has recorded so far; a checkpoint's `progress.json`.

The model, optimizer, scheduler and random generators are checkpointed by `train/checkpoint.py`;
this is the rest: the position in the data, the bookkeeping of evaluations and early stopping,
and the measurements that end up in metrics.json. `state_dict()` is plain JSON-able data with a
format version; version 1 is the unversioned dict of lorakit 0.1 checkpoints (the same keys),
read as is, and a newer version than this lorakit knows is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lorakit.errors import LorakitError

STATE_VERSION = 2


def _empty_history() -> dict[str, list[dict[str, Any]]]:
    return {"train": [], "eval": []}


@dataclass
class TrainState:
    """A run's progress. The data position is (`epoch`, `batch`): the next micro-batch to train is
    batch `batch` of epoch `epoch` (batches are a pure function of seed and epoch)."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # next batch index in `epoch`
    # history["train"]: {"step", "epoch", "loss", "lr"} every log_steps; history["eval"]: one entry
    # per validation, {"step", "epoch", "loss", <the task's metrics>}.
    history: dict[str, list[dict[str, Any]]] = field(default_factory=_empty_history)
    best: dict[str, Any] | None = None  # the best validation entry so far (its weights are kept)
    bad_evals: int = 0  # validations since the best one, for early stopping
    train_seconds: float = 0.0  # time in training steps (evaluation excluded)
    tokens: int = 0  # real (unpadded) tokens trained on by this process
    samples_before: list[dict[str, Any]] | None = None  # the report's generations before training

    def record_train_loss(self, epoch_position: float, loss: float, lr: float) -> None:
        """Append this step's training loss to the history."""
        self.history["train"].append({"step": self.step, "epoch": round(epoch_position, 4), "loss": loss, "lr": lr})

    def state_dict(self) -> dict[str, Any]:
        """The state as JSON-able data, with its format version."""
        return {"version": STATE_VERSION, **dataclasses.asdict(self)}

    def load_state_dict(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Take the values of `state_dict()` output (any version up to this one).

        Raises:
            LorakitError: a newer format, or a dict that is not a lorakit training state.
        """
        state = dict(state)
        version = state.pop("version", 1)  # lorakit 0.1 wrote the same keys without a version
        if not isinstance(version, int) or version > STATE_VERSION:
            raise LorakitError(
                f"{source} was written by a newer lorakit (state version {version!r}; this one reads up to "
                f"{STATE_VERSION}); resume it with that version"
            )
        names = [f.name for f in dataclasses.fields(self)]
        missing, unknown = sorted(set(names) - set(state)), sorted(set(state) - set(names))
        if missing or unknown:
            wrong = ", ".join([*(f"missing {n}" for n in missing), *(f"unknown {n}" for n in unknown)])
            raise LorakitError(f"{source} is not a lorakit training state ({wrong}); start a new run instead")
        for name in names:
            setattr(self, name, state[name])
