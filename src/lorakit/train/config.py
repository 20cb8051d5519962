"""`TrainConfig`: everything a training run needs, as plain data, validated once.

Sources, later ones winning: the defaults below (the seed recipe), a YAML/JSON file
(`--config run.yaml`), command-line flags. The resolved config is written to the run folder as
`config.yaml`, and `--resume` reads it back from there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lorakit.errors import LorakitError
from lorakit.lora.config import LoraConfig

TASKS = ("classification", "causal-lm", "seq2seq")
METHODS = ("lora", "full")
SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ON_EMPTY = ("skip", "fail")
QUANTIZE = ("nf4", "bnb-nf4")
# What a task trains when --model/--data are not given. No seq2seq model ships in a package.
DEFAULT_MODELS = {"classification": "all-MiniLM-L6-v2", "causal-lm": "SmolLM2-135M-Instruct", "seq2seq": None}
DEFAULT_DATA = {"classification": "rotten-tomatoes", "causal-lm": "chatterbot", "seq2seq": "chatterbot"}

# LoRA trains a few randomly initialised parameters from scratch (B starts at zero, the head is
# new), so it needs a much larger step than full fine-tuning's 5e-5, which nudges pretrained
# weights. Measured on the default job: 5e-5 → 0.779 test accuracy after 3 epochs, 5e-4 → 0.832.
DEFAULT_LR = {"lora": 5e-4, "full": 5e-5}


@dataclass
class TrainConfig:
    """A fine-tuning run. Defaults follow the seed recipe (LoRA r=8, alpha=32, the architecture's
    attention preset — query/value for BERT, q_proj/v_proj for Llama —, dropout 0.1, batch 16,
    max_length 256, 3 epochs)."""

    task: str = "classification"
    # What to train on; None → the task's default (DEFAULT_MODELS, DEFAULT_DATA).
    model: str | None = None
    data: str | None = None
    # Classification data.
    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str | None = None
    # Generative data: prompt/response columns, or a column of chat messages.
    prompt_column: str = "prompt"
    response_column: str = "response"
    messages_column: str = "messages"
    system_prompt: str | None = None
    packing: bool = False
    max_target_length: int = 128  # seq2seq targets
    on_empty: str = "skip"
    max_train_examples: int | None = None
    # Where the run goes: output_dir is the run folder itself; empty → runs/<data>-<method>[-N].
    output_dir: str | None = None
    # Method.
    method: str = "lora"
    r: int = 8
    lora_alpha: float = 32
    lora_dropout: float = 0.1
    target_modules: list[str] | str | None = None  # None: the architecture's preset (query,value for BERT)
    use_rslora: bool = False
    quantize: str | None = None  # "nf4": frozen base linears stored in 4 bits (QLoRA)
    # Optimisation.
    epochs: float = 3
    max_steps: int | None = None
    lr: float | None = None
    batch_size: int = 16
    gradient_accumulation_steps: int = 1
    max_length: int = 256
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    scheduler: str = "linear"
    max_grad_norm: float | None = 1.0
    precision: str = "auto"
    group_by_length: bool = True
    # Draw dropout masks with a faster generator on CPU (same distribution; see train/dropout.py).
    fast_dropout: bool = True
    # Classifiers that read only [CLS]: run the last layer on that token alone (same logits; models/first_token.py).
    first_token_only: bool = True
    seed: int = 42
    # Evaluation, checkpoints, logging.
    eval_steps: int | None = None
    early_stopping_patience: int | None = None
    checkpoint_steps: int = 200
    log_steps: int = 10
    generation_samples: int = 8  # held-out prompts generated before and after training (report)
    max_new_tokens: int = 48
    quiet: bool = False

    def __post_init__(self) -> None:
        _choice(self.task, TASKS, "task")
        if self.model is None:
            self.model = DEFAULT_MODELS[self.task]
            if self.model is None:
                raise LorakitError(
                    f"task {self.task} has no packaged default model; pass --model (a local folder or a Hub id "
                    "such as google/flan-t5-small)"
                )
        if self.data is None:
            self.data = DEFAULT_DATA[self.task]
        _choice(self.method, METHODS, "method")
        if self.quantize is not None:
            _choice(self.quantize, QUANTIZE, "quantize")
            if self.method != "lora":
                raise LorakitError(
                    "quantize trains LoRA on a frozen 4-bit base; it cannot be combined with method full"
                )
        if self.packing and self.task != "causal-lm":
            raise LorakitError(f"packing applies to task causal-lm only, not {self.task}")
        _choice(self.scheduler, SCHEDULERS, "scheduler")
        _choice(self.precision, PRECISIONS, "precision")
        _choice(self.on_empty, ON_EMPTY, "on_empty")
        for name in (
            "batch_size",
            "gradient_accumulation_steps",
            "max_length",
            "max_target_length",
            "checkpoint_steps",
            "log_steps",
            "max_new_tokens",
        ):
            _positive_int(getattr(self, name), name)
        for name in ("max_steps", "eval_steps", "early_stopping_patience", "max_train_examples"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), name)
        if isinstance(self.generation_samples, bool) or not isinstance(self.generation_samples, int):
            raise LorakitError(f"generation_samples must be a whole number >= 0, got {self.generation_samples!r}")
        if self.generation_samples < 0:
            raise LorakitError(f"generation_samples must be >= 0, got {self.generation_samples}")
        if not isinstance(self.epochs, (int, float)) or isinstance(self.epochs, bool) or self.epochs <= 0:
            raise LorakitError(f"epochs must be a positive number, got {self.epochs!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.method]
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise LorakitError(f"lr must be a number in (0, 1), got {self.lr!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise LorakitError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0:
            raise LorakitError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if isinstance(self.target_modules, str) and "," in self.target_modules:
            self.target_modules = [m.strip() for m in self.target_modules.split(",") if m.strip()]
        LoraConfig(**self.lora_config_kwargs())  # the LoRA fields are checked here, once, for every method

    def lora_config_kwargs(self) -> dict[str, Any]:
        return {
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": self.target_modules,
            "use_rslora": self.use_rslora,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LorakitError(
                f"{source}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except TypeError as error:
            raise LorakitError(f"{source}: {error}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of TrainConfig fields (dashes or underscores)."""
    file = Path(path)
    if not file.is_file():
        raise LorakitError(f"config file {file} does not exist")
    try:
        data = json.loads(file.read_text()) if file.suffix == ".json" else yaml.safe_load(file.read_text())
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())
        raise LorakitError(f"config file {file} is not valid YAML/JSON: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LorakitError(f"config file {file} must hold a mapping of fields, got {type(data).__name__}")
    return {str(key).replace("-", "_"): value for key, value in data.items()}


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise LorakitError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LorakitError(f"{name} must be a positive integer, got {value!r}")
