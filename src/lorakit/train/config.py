"""`TrainConfig`: everything a training run needs, as plain data, validated and normalised once.

Sources, later ones winning: the defaults below (the seed recipe), a YAML/JSON file
(`--config run.yaml`), command-line flags. The resolved config is written to the run folder as
`config.yaml`, and `--resume` reads it back from there.

Each field is declared with `option(...)`: its default, its help text and its group. That one
declaration is the whole option: `lorakit train`'s flags are generated from it (`--field-name`;
a True boolean gets `--no-field-name`), with the default shown from the same place. Its type hint
is checked on construction: a config file's `fsdp: "no"` or `epochs: .inf` is an error naming the
field, never a truthy string or an endless run.

Config files are read as YAML 1.2 reads numbers (`lr: 5e-4` is a number, where PyYAML's YAML 1.1
makes it a string), and refused whole when they nest or alias beyond any real config (a YAML
"billion laughs" would otherwise take minutes to print in an error).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lorakit.data import ON_EMPTY_CHOICES, ClassificationOptions, GenerativeOptions
from lorakit.errors import LorakitError, option_name
from lorakit.folders import write_text
from lorakit.jsontext import loads
from lorakit.lora.config import LoraConfig, parse_target_spec
from lorakit.report.humanize import parse_bytes
from lorakit.task_kind import TaskKind

METHODS = ("lora", "full")
SCHEDULERS = ("linear", "cosine", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
QUANTIZE = ("nf4", "bnb-nf4")
AUTO_ON_OFF = ("auto", "on", "off")  # gradient_checkpointing, packing: decided by lorakit, or forced
# Option groups, in the order `lorakit train --help` shows them.
GROUPS = ("data and model", "method", "optimisation", "memory", "evaluation and checkpoints")

# `set_seed` seeds numpy's legacy generator too, which takes 32 bits.
MAX_SEED = 2**32 - 1
# A config file holding more values than this (counting every item of every list and mapping) is
# no config: it is junk, or a YAML alias bomb whose error message alone would never finish.
MAX_CONFIG_VALUES = 10_000

# LoRA trains a few randomly initialised parameters from scratch (B starts at zero, the head is
# new), so it needs a much larger step than full fine-tuning's 5e-5, which nudges pretrained
# weights. Measured on the default job: 5e-5 → 0.779 test accuracy after 3 epochs, 5e-4 → 0.832.
DEFAULT_LR = {"lora": 5e-4, "full": 5e-5}


def option(
    default: Any,
    help: str,
    group: str,
    *,
    choices: tuple[str, ...] | None = None,
    shown_default: str | None = None,
    flag_const: str | None = None,
) -> Any:
    """A `TrainConfig` field with what `lorakit train` needs to offer it as a flag.

    `shown_default` replaces the default in the help text where the real default is decided later
    (None → "the task's packaged model"). A boolean's flag switches it away from its default.
    `flag_const` is the value of the flag given without one (`--gradient-checkpointing` = on).
    """
    assert group in GROUPS, group
    metadata = {
        "help": help,
        "group": group,
        "choices": choices,
        "shown_default": shown_default,
        "flag_const": flag_const,
    }
    return field(default=default, metadata=metadata)


def _by_task(fact: str) -> str:
    values = ", ".join(f"{getattr(kind, fact)} for {kind}" for kind in TaskKind if getattr(kind, fact))
    return f"the task's: {values}"


@dataclass
class TrainConfig:
    """A fine-tuning run. Defaults follow the seed recipe (LoRA r=8, alpha=32, the architecture's
    attention preset — query/value for BERT, q_proj/v_proj for Llama —, dropout 0.1, batch 16,
    max_length 256, 3 epochs). After construction `task` is a `TaskKind` and every None default
    that depends on other fields (model, data, lr) is filled in."""

    task: TaskKind | str = option(
        TaskKind.CLASSIFICATION.value, "what to train", "data and model", choices=TaskKind.names()
    )
    model: str | None = option(
        None, "packaged name, local folder or Hub id", "data and model", shown_default=_by_task("default_model")
    )
    data: str | None = option(
        None,
        "built-in dataset name, a file/folder, or a datasets name",
        "data and model",
        shown_default=_by_task("default_data"),
    )
    text_column: str = option("text", "classification: column with the text", "data and model")
    label_column: str = option("label", "classification: column with the label", "data and model")
    text_pair_column: str | None = option(None, "classification: second text column, for pair tasks", "data and model")
    prompt_column: str = option("prompt", "generation: column with the prompt", "data and model")
    response_column: str = option("response", "generation: column with the response", "data and model")
    messages_column: str = option("messages", "generation: column of chat messages", "data and model")
    system_prompt: str | None = option(
        None, "generation: a system message put before every conversation", "data and model"
    )
    packing: str = option(
        "auto",
        "causal-lm: pack short examples into full rows; auto = when length-grouped batches would still "
        "be more than a quarter padding",
        "data and model",
        choices=AUTO_ON_OFF,
        flag_const="on",
    )
    max_target_length: int = option(128, "seq2seq: truncate responses to this many tokens", "data and model")
    on_empty: str = option("skip", "empty texts: skip them or fail", "data and model", choices=ON_EMPTY_CHOICES)
    max_train_examples: int | None = option(None, "use only this many training examples", "data and model")
    # Validation runs at every evaluation; on a big model a whole split costs minutes each time.
    max_validation_examples: int | None = option(
        None, "validate on a fixed sample of this many examples (the test split stays whole)", "data and model"
    )
    output_dir: str | None = option(
        None, "the run folder itself", "data and model", shown_default="runs/<data>-<method>[-N]"
    )

    method: str = option("lora", "lora, or full fine-tuning of every weight", "method", choices=METHODS)
    r: int = option(8, "LoRA rank", "method")
    lora_alpha: float = option(32, "LoRA alpha; scaling = alpha/r", "method")
    lora_dropout: float = option(0.1, "dropout on the LoRA input", "method")
    target_modules: list[str] | str | None = option(
        None,
        "modules to adapt: comma-separated names (exact or dotted suffix), a regex, or all-linear",
        "method",
        shown_default="the architecture's attention preset, e.g. query,value for BERT",
    )
    use_rslora: bool = option(False, "scale by alpha/sqrt(r)", "method")
    quantize: str | None = option(None, "QLoRA: store the frozen base linears in 4-bit NF4", "method", choices=QUANTIZE)

    epochs: float = option(3, "passes over the training data", "optimisation")
    max_steps: int | None = option(None, "stop after this many optimizer steps", "optimisation")
    lr: float | None = option(None, "peak learning rate", "optimisation", shown_default="5e-4 for LoRA, 5e-5 for full")
    batch_size: int = option(16, "examples per step and process", "optimisation")
    gradient_accumulation_steps: int = option(1, "batches per optimizer step", "optimisation")
    max_length: int = option(256, "truncate texts to this many tokens", "optimisation")
    weight_decay: float = option(0.01, "AdamW weight decay", "optimisation")
    warmup_ratio: float = option(0.06, "share of steps for linear warmup", "optimisation")
    scheduler: str = option("linear", "decay after warmup", "optimisation", choices=SCHEDULERS)
    max_grad_norm: float | None = option(1.0, "gradient clipping norm; 0 turns clipping off", "optimisation")
    precision: str = option(
        "auto", "compute dtype; auto = bf16 where the device runs it fast", "optimisation", choices=PRECISIONS
    )
    group_by_length: bool = option(True, "batches of similar lengths (off: random batches)", "optimisation")
    # Draw dropout masks with a faster generator on CPU (same distribution; see train/dropout.py).
    fast_dropout: bool = option(
        True,
        "draw dropout masks with a faster generator (off: torch's own)",
        "optimisation",
    )
    # Classifiers that read only [CLS]: run the last layer on that token alone (same logits; models/first_token.py).
    first_token_only: bool = option(
        True,
        "compute only the [CLS] token its head reads in a classifier's last layer (off: every position)",
        "optimisation",
    )
    seed: int = option(42, "seed for data order, initialisation and dropout", "optimisation")
    gradient_checkpointing: str = option(
        "auto",
        "recompute activations in backward instead of keeping them; auto = on for generative tasks when it "
        "at least halves the estimated peak, or when memory calls for it",
        "memory",
        choices=AUTO_ON_OFF,
        flag_const="on",
    )
    piece_tokens: int | None = option(
        None,
        "run each micro-batch in pieces of at most N padded tokens without checkpointing (rows sorted by "
        "length; same gradients), checkpointing only rows longer than N; auto = on CPU under --max-memory, "
        "when it leads to checkpointing, the largest pieces that fit the budget; 0 = whole micro-batches",
        "memory",
        shown_default="auto",
    )
    offload_activations: bool = option(False, "CUDA: keep checkpointed activations in host memory", "memory")
    fsdp: bool = option(
        False,
        "shard the model over the launched processes with FSDP2, block by block (under torchrun or "
        "accelerate launch): each holds 1/N of the frozen base",
        "memory",
    )
    max_memory: str | None = option(
        None,
        "memory budget, e.g. 4GiB: picks micro-batch × gradient accumulation (same effective batch) and "
        "checkpointing to fit; an impossible budget is an error naming what would fit",
        "memory",
    )

    eval_steps: int | None = option(
        None, "validate every N steps", "evaluation and checkpoints", shown_default="every epoch"
    )
    early_stopping_patience: int | None = option(
        None, "stop after N evaluations without improvement", "evaluation and checkpoints"
    )
    checkpoint_steps: int = option(200, "write a resumable checkpoint every N steps", "evaluation and checkpoints")
    log_steps: int = option(10, "record the training loss every N steps", "evaluation and checkpoints")
    generation_samples: int = option(
        8, "generation: held-out prompts shown before/after in the report", "evaluation and checkpoints"
    )
    max_new_tokens: int = option(48, "generation: tokens generated per report sample", "evaluation and checkpoints")
    quiet: bool = option(False, "no progress bar: log lines only", "evaluation and checkpoints")

    def __post_init__(self) -> None:
        self.task = TaskKind.parse(self.task)
        self.packing = _on_off(self.packing)
        self.gradient_checkpointing = _on_off(self.gradient_checkpointing)
        _check_types(self)
        self._fill_defaults()
        _choice(self.method, METHODS, "method")
        if self.quantize is not None:
            _choice(self.quantize, QUANTIZE, "quantize")
            if self.method != "lora":
                raise LorakitError(
                    "quantize trains LoRA on a frozen 4-bit base; it cannot be combined with method full"
                )
        _choice(self.packing, AUTO_ON_OFF, "packing")
        if self.packing == "on" and self.task is not TaskKind.CAUSAL_LM:
            raise LorakitError(f"packing applies to task causal-lm only, not {self.task}")
        _choice(self.scheduler, SCHEDULERS, "scheduler")
        _choice(self.precision, PRECISIONS, "precision")
        _choice(self.gradient_checkpointing, AUTO_ON_OFF, "gradient_checkpointing")
        if self.offload_activations:  # it offloads what checkpointing keeps
            if self.gradient_checkpointing == "off":
                raise LorakitError(
                    "offload_activations moves checkpointed activations; drop --gradient-checkpointing off"
                )
            self.gradient_checkpointing = "on"
        self.max_memory_bytes()  # a size, or an error naming the forms it takes
        if self.fsdp and self.method != "lora":
            raise LorakitError("fsdp shards LoRA training; it cannot be combined with method full yet")
        if self.fsdp and self.quantize == "bnb-nf4":
            raise LorakitError(
                "fsdp cannot shard bitsandbytes' 4-bit weights (they are not DTensor-aware); use --quantize nf4, "
                "whose torchao weights FSDP2 splits"
            )
        self._check_numbers()
        if isinstance(self.target_modules, str):
            self.target_modules = parse_target_spec(self.target_modules)
        if self.max_grad_norm == 0:  # "0 = off", as the help says
            self.max_grad_norm = None
        LoraConfig(**self.lora_config_kwargs())  # the LoRA fields are checked here, once, for every method
        self.data_options()  # and the data options, by the data layer's own rules

    def _fill_defaults(self) -> None:
        """The defaults that depend on other fields: the task's model and data, the method's lr."""
        if self.model is None:
            self.model = self.task.default_model
            if self.model is None:
                raise LorakitError(
                    f"task {self.task} has no packaged default model; pass --model (a local folder or a Hub id "
                    "such as google/flan-t5-small)"
                )
        if self.data is None:
            self.data = self.task.default_data
        if self.lr is None and self.method in DEFAULT_LR:
            self.lr = DEFAULT_LR[self.method]

    def _check_numbers(self) -> None:
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
        for name in ("max_steps", "eval_steps", "early_stopping_patience"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), name)
        pieces = self.piece_tokens
        if pieces is not None and (isinstance(pieces, bool) or not isinstance(pieces, int) or pieces < 0):
            raise LorakitError(
                f"{option_name('piece_tokens')} must be a whole number >= 0 (0: whole micro-batches), got {pieces!r}"
            )
        samples = self.generation_samples
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise LorakitError(f"{option_name('generation_samples')} must be a whole number >= 0, got {samples!r}")
        if not isinstance(self.epochs, (int, float)) or isinstance(self.epochs, bool) or self.epochs <= 0:
            raise LorakitError(f"{option_name('epochs')} must be a positive number, got {self.epochs!r}")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < 1:
            raise LorakitError(f"{option_name('lr')} must be a number in (0, 1), got {self.lr!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise LorakitError(f"{option_name('warmup_ratio')} must be in [0, 1), got {self.warmup_ratio!r}")
        if self.weight_decay < 0:
            raise LorakitError(f"{option_name('weight_decay')} must be >= 0, got {self.weight_decay!r}")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise LorakitError(
                f"{option_name('max_grad_norm')} must be >= 0 (0 turns clipping off), got {self.max_grad_norm!r}"
            )
        if self.seed > MAX_SEED:
            raise LorakitError(f"{option_name('seed')} must be at most 2**32 - 1 = {MAX_SEED:,}, got {self.seed:,}")

    def max_memory_bytes(self) -> int | None:
        """The memory budget in bytes, or None without one (raises LorakitError for a non-size)."""
        if self.max_memory is None:
            return None
        try:
            return parse_bytes(self.max_memory)
        except ValueError:
            example = "a size such as 4GiB, 512MiB or 1.5G"
            raise LorakitError(f"{option_name('max_memory')} must be {example}; got {self.max_memory!r}") from None

    def lora_config_kwargs(self) -> dict[str, Any]:
        """The LoRA fields as `LoraConfig` keyword arguments."""
        return {
            "r": self.r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "target_modules": self.target_modules,
            "use_rslora": self.use_rslora,
        }

    def data_options(self) -> ClassificationOptions | GenerativeOptions:
        """How the task's loader reads `data`, validated by the data layer (raises LorakitError)."""
        shared = {
            "on_empty": self.on_empty,
            "seed": self.seed,
            "max_train_examples": self.max_train_examples,
            "max_validation_examples": self.max_validation_examples,
        }
        if self.task.generates:
            return GenerativeOptions(
                prompt_column=self.prompt_column,
                response_column=self.response_column,
                messages_column=self.messages_column,
                system_prompt=self.system_prompt,
                **shared,
            )
        return ClassificationOptions(
            text_column=self.text_column,
            label_column=self.label_column,
            text_pair_column=self.text_pair_column,
            **shared,
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain data (the task by name), as config.yaml stores it."""
        data = dataclasses.asdict(self)
        data["task"] = self.task.value
        return data

    def save(self, path: Path) -> None:
        """Write the config as YAML (what `--resume` reads back)."""
        write_text(path, yaml.dump(self.to_dict(), Dumper=_ConfigDumper, sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        """A config from field names → values; an unknown field is an error naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in set(data) - known)
        if unknown:
            raise LorakitError(
                f"{source}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except TypeError as error:
            raise LorakitError(f"{source}: {error}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of TrainConfig fields (dashes or underscores).

    Raises:
        LorakitError: no such file, an unreadable one, text that is not YAML/JSON or not a
            mapping, a field given twice (dashed and not), or more than `MAX_CONFIG_VALUES` values.
    """
    file = Path(path)
    if not file.is_file():
        raise LorakitError(f"config file {file} {'is a folder' if file.is_dir() else 'does not exist'}")
    try:
        text = file.read_text(encoding="utf-8-sig")
        data = loads(text) if file.suffix == ".json" else yaml.load(text, Loader=_ConfigLoader)
    except OSError as error:
        reason = error.strerror or error
        raise LorakitError(f"config file {file} cannot be read ({reason}); check its permissions") from None
    except UnicodeDecodeError as error:
        raise LorakitError(
            f"config file {file} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at position {error.start}); "
            "re-save it as UTF-8"
        ) from None
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        reason = " ".join(str(error).split())
        raise LorakitError(f"config file {file} is not valid YAML/JSON: {reason}") from None
    except RecursionError:
        raise LorakitError(f"config file {file} nests lists or mappings too deeply to read") from None
    except ValueError:  # PyYAML converting an integer of more than 4,300 digits
        raise LorakitError(f"config file {file} holds an integer of more than 4,300 digits") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LorakitError(f"config file {file} must hold a mapping of fields, got {type(data).__name__}")
    if _count_values(data) > MAX_CONFIG_VALUES:
        raise LorakitError(
            f"config file {file} holds more than {MAX_CONFIG_VALUES:,} values (counting YAML aliases as often as "
            "they are used); a training config needs a few dozen"
        )
    settings: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in settings:
            raise LorakitError(f"config file {file} sets {name} twice; keep one")
        settings[name] = value
    return settings


class _ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `5e-4` and `1E3` as numbers, as YAML 1.2 does (YAML 1.1 wants a
    dot: `5.0e-4`), since that is how people write learning rates."""


class _ConfigDumper(yaml.SafeDumper):
    """PyYAML's safe dumper, quoting the texts `_ConfigLoader` would read as numbers (a column named
    "5e-4"), so config.yaml reads back as it was written."""


for _yaml_class in (_ConfigLoader, _ConfigDumper):
    _yaml_class.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )


def _count_values(data: Any) -> int:
    """How many values `data` holds, stopping past `MAX_CONFIG_VALUES` (aliases counted each time
    they are used, so a recursive alias counts as too many)."""
    count, pending = 0, [data]
    while pending and count <= MAX_CONFIG_VALUES:
        value = pending.pop()
        count += 1
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return count


@functools.cache
def _field_types() -> dict[str, tuple[type, ...]]:
    """Each TrainConfig field → the types its hint allows (None's type for Optional, list for list[str])."""
    hints = typing.get_type_hints(TrainConfig)
    return {
        name: tuple(typing.get_origin(member) or member for member in typing.get_args(hint) or (hint,))
        for name, hint in hints.items()
    }


# How messages name a type; an int also fits a float field.
_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a text", list: "a list"}
# A wrong value as messages show it: abbreviated, so a huge one makes a short line.
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlist = _SHOWN.maxdict = 4


def _check_types(config: TrainConfig) -> None:
    """Every field holds a value of its declared type: a boolean no text, an int no bool, a float
    finite. (The values' ranges are checked after, field by field.)"""
    for name, types in _field_types().items():
        value = getattr(config, name)
        if value is None and type(None) in types:
            continue
        if isinstance(value, bool):
            fits = bool in types
        elif isinstance(value, (int, float)):
            fits = float in types or (int in types and isinstance(value, int))
            if fits and isinstance(value, float) and not math.isfinite(value):
                raise LorakitError(f"{name} must be a finite number, got {value}")
        else:
            fits = isinstance(value, types)
        if not fits:
            words = " or ".join(_TYPE_WORDS.get(kind, kind.__name__) for kind in types if kind is not TaskKind)
            words = words.replace("NoneType", "null")
            raise LorakitError(f"{name} must be {words}, got {_SHOWN.repr(value)}")


def _on_off(value: Any) -> Any:
    """YAML reads `on`/`off`/`yes` as booleans: map them back to the choice names."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


def _choice(value: Any, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise LorakitError(f"{option_name(name)} must be one of {', '.join(allowed)}; got {value!r}")


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LorakitError(f"{option_name(name)} must be a positive integer, got {value!r}")
