"""`LoraConfig`: PEFT's LoRA vocabulary, validated once on construction.

Field names and meanings are PEFT's (`peft.LoraConfig`) so that configs and `adapter_config.json`
files move between lorakit and PEFT unchanged. Only the LoRA features lorakit implements are
fields here; an adapter file that relies on anything else (DoRA, embedding LoRA, ...) is refused
by `LoraConfig.from_peft_dict` with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from lorakit.errors import LorakitError

PEFT_TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
BIAS_OPTIONS = ("none", "all", "lora_only")
INIT_OPTIONS = (True, False, "gaussian")
ALL_LINEAR = "all-linear"
_REGEX_CHARACTERS = set("*()|[]^$\\+?")

# Heads that PEFT trains and saves with the adapter for these tasks (PeftModelFor<Task>).
TASK_HEADS = {
    "SEQ_CLS": ["classifier", "score"],
    "TOKEN_CLS": ["classifier", "score"],
    "QUESTION_ANS": ["qa_outputs"],
}

# PEFT adapter_config.json keys that describe how an adapter was made, not how it computes:
# safe to ignore when loading.
_INFORMATIONAL_PEFT_KEYS = {
    "peft_type",
    "peft_version",
    "auto_mapping",
    "megatron_core",
    "megatron_config",
    "qalora_group_size",
    "loftq_config",
    "eva_config",
    "corda_config",
    "lora_ga_config",
    "kasa_config",
    "monteclora_config",
    "velora_config",
    "ensure_weight_tying",
}
# init_lora_weights values that rewrite the *base* weights: such adapters only work on a base
# that PEFT converted, so they are refused rather than silently producing wrong outputs.
_BASE_MODIFYING_INITS = ("pissa", "olora", "corda", "loftq", "mica")


@dataclass
class LoraConfig:
    """How to attach LoRA to a model: `W' = W + scaling · B·A` on every targeted layer.

    `scaling = lora_alpha / r`, or `lora_alpha / sqrt(r)` with `use_rslora`. A has shape
    (r, in_features), B has shape (out_features, r).

    Args:
        r: rank of the update, > 0.
        lora_alpha: numerator of the scaling factor, > 0.
        lora_dropout: dropout probability applied to the layer input of the LoRA path, in [0, 1).
        target_modules: which layers get LoRA. A list matches a module whose full dotted name
            equals an entry or ends with `.entry`; a string is a regex that must match the full
            name; `"all-linear"` means every Linear/Conv1D except the output head; None uses the
            preset for the model's architecture.
        exclude_modules: layers never targeted, matched like `target_modules` (list or regex).
        modules_to_save: layers trained in full and saved with the adapter (e.g. a new head),
            matched by exact name or dotted suffix.
        bias: which base biases train and are saved: "none", "all", or "lora_only".
        task_type: PEFT task type; SEQ_CLS/TOKEN_CLS also train and save the classifier head.
        use_rslora: rank-stabilised scaling alpha/sqrt(r).
        init_lora_weights: True (A kaiming-uniform with a=sqrt(5), B zero: the adapter starts as
            a no-op), "gaussian" (A ~ N(0, 1/r), B zero), or False (A and B random: for tests).
        rank_pattern / alpha_pattern: per-module overrides of r / lora_alpha; keys are regexes
            matched against the end of the module name.
        layers_to_transform: only layers with these indices (the first number in the module name,
            or the one after `layers_pattern`); needs a list `target_modules`.
        layers_pattern: name of the layer list, e.g. "layers" or "h".
        fan_in_fan_out: the base weight is stored (in, out), as in GPT-2's Conv1D (set
            automatically for Conv1D layers).
        lora_bias: give B a trainable bias.
        base_model_name_or_path / revision: the base this adapter was made for (informational).
        inference_mode: loaded for inference; no parameter trains.

    Raises:
        LorakitError: a field has a value outside what is allowed; the message names the field.
    """

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    modules_to_save: list[str] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"
    task_type: str | None = None
    use_rslora: bool = False
    init_lora_weights: bool | str = True
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    fan_in_fan_out: bool = False
    lora_bias: bool = False
    base_model_name_or_path: str | None = None
    revision: str | None = None
    inference_mode: bool = False

    def __post_init__(self) -> None:
        self.target_modules = _as_name_spec(self.target_modules, "target_modules")
        # An empty exclude list / layer list means "no filter", as in PEFT.
        if self.exclude_modules is not None and not isinstance(self.exclude_modules, str) and not self.exclude_modules:
            self.exclude_modules = None
        self.exclude_modules = _as_name_spec(self.exclude_modules, "exclude_modules")
        if isinstance(self.layers_to_transform, (list, tuple)) and not self.layers_to_transform:
            self.layers_to_transform = None
        self.rank_pattern = _as_pattern(self.rank_pattern, "rank_pattern")
        self.alpha_pattern = _as_pattern(self.alpha_pattern, "alpha_pattern")
        if isinstance(self.base_model_name_or_path, os.PathLike):
            self.base_model_name_or_path = str(self.base_model_name_or_path)
        self.modules_to_save = _as_module_names(self.modules_to_save, "modules_to_save")
        _check_types(self)
        _check_rank(self.r, "r")
        _check_alpha(self.lora_alpha, "lora_alpha")
        if (
            isinstance(self.lora_dropout, bool)
            or not isinstance(self.lora_dropout, (int, float))
            or not (0.0 <= self.lora_dropout < 1.0)
        ):
            raise LorakitError(f"lora_dropout must be a number in [0, 1), got {self.lora_dropout!r}")
        if self.bias not in BIAS_OPTIONS:
            raise LorakitError(f"bias must be one of {', '.join(BIAS_OPTIONS)}; got {self.bias!r}")
        if self.task_type is not None:
            self.task_type = str(self.task_type).upper()
            if self.task_type not in PEFT_TASK_TYPES:
                raise LorakitError(
                    f"task_type must be one of {', '.join(PEFT_TASK_TYPES)} or None; got {self.task_type!r}"
                )
        if isinstance(self.init_lora_weights, str) and self.init_lora_weights.lower() == "gaussian":
            self.init_lora_weights = "gaussian"
        if self.init_lora_weights not in INIT_OPTIONS or (not isinstance(self.init_lora_weights, (bool, str))):
            raise LorakitError(f"init_lora_weights must be True, False or 'gaussian'; got {self.init_lora_weights!r}")
        for key, rank in self.rank_pattern.items():
            _check_pattern_key(key, "rank_pattern")
            _check_rank(rank, f"rank_pattern[{key!r}]")
        for key, alpha in self.alpha_pattern.items():
            _check_pattern_key(key, "alpha_pattern")
            _check_alpha(alpha, f"alpha_pattern[{key!r}]")
        if self.layers_to_transform is not None:
            indices = (
                [self.layers_to_transform] if isinstance(self.layers_to_transform, int) else self.layers_to_transform
            )
            if not isinstance(indices, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices
            ):
                raise LorakitError(f"layers_to_transform must be layer indices >= 0; got {self.layers_to_transform!r}")
            if isinstance(self.target_modules, str):
                raise LorakitError("layers_to_transform needs target_modules as a list of names, not a regex string")
        if self.layers_pattern is not None and self.layers_to_transform is None:
            raise LorakitError(
                "layers_pattern only has an effect together with layers_to_transform; set both or neither"
            )

    # The scaling of the update for one module, after rank_pattern / alpha_pattern.
    def rank_and_scaling(self, module_name: str) -> tuple[int, float]:
        """`(r, scaling)` for the module with this full dotted name."""
        r = _pattern_value(self.rank_pattern, module_name, self.r)
        alpha = _pattern_value(self.alpha_pattern, module_name, self.lora_alpha)
        scaling = alpha / math.sqrt(r) if self.use_rslora else alpha / r
        return r, scaling

    def heads_to_save(self) -> list[str]:
        """`modules_to_save` plus the task's head names (PEFT trains and saves the head too)."""
        names = list(self.modules_to_save or [])
        names += [head for head in TASK_HEADS.get(self.task_type or "", []) if head not in names]
        return names

    def to_peft_dict(self) -> dict[str, Any]:
        """The `adapter_config.json` content PEFT reads (`peft.LoraConfig.from_pretrained`)."""
        data = dataclasses.asdict(self)
        data["modules_to_save"] = self.heads_to_save() or None
        data["peft_type"] = "LORA"
        return data

    @classmethod
    def from_peft_dict(cls, data: dict[str, Any], source: str = "adapter_config.json") -> LoraConfig:
        """Read a PEFT `adapter_config.json` dict; refuse features lorakit does not implement."""
        if not isinstance(data, dict):
            raise LorakitError(f"{source} must hold a JSON object, got {type(data).__name__}")
        peft_type = data.get("peft_type", "LORA")
        if peft_type != "LORA":
            raise LorakitError(f"{source} is a {peft_type} adapter; lorakit loads LoRA adapters only (peft_type LORA)")
        known = {f.name for f in dataclasses.fields(cls)}
        unsupported = sorted(
            key
            for key, value in data.items()
            if key not in known and key not in _INFORMATIONAL_PEFT_KEYS and value not in (None, False, {}, [], "")
        )
        if unsupported:
            described = ", ".join(f"{key}={data[key]!r}" for key in unsupported)
            raise LorakitError(
                f"{source} uses PEFT features lorakit does not implement ({described}); load it with peft instead"
            )
        kwargs = {key: value for key, value in data.items() if key in known}
        init = kwargs.get("init_lora_weights", True)
        if isinstance(init, str) and init.lower() != "gaussian":
            if init.lower().startswith(_BASE_MODIFYING_INITS):
                raise LorakitError(
                    f"{source} was initialised with init_lora_weights={init!r}, which changes the base weights; "
                    "convert it to a plain LoRA adapter with peft (path_initial_model_for_weight_conversion) first"
                )
            kwargs["init_lora_weights"] = True  # only affects fresh weights, which loading overwrites
        # PEFT writes the task head into modules_to_save; keep only the user's extra modules.
        heads = TASK_HEADS.get(str(kwargs.get("task_type") or "").upper(), [])
        if kwargs.get("modules_to_save") and isinstance(kwargs["modules_to_save"], list):
            kwargs["modules_to_save"] = [m for m in kwargs["modules_to_save"] if m not in heads] or None
        for key in ("target_modules", "exclude_modules"):
            if isinstance(kwargs.get(key), (set, tuple)):
                kwargs[key] = sorted(kwargs[key])
        try:
            return cls(**kwargs)
        except (TypeError, LorakitError) as error:
            raise LorakitError(f"{source}: {error}") from None


def parse_target_spec(value: str, name: str = "target_modules") -> list[str] | str:
    """A target spec as written on a command line or in a config file: `query,value` → a list of
    names; `all-linear` as is; anything with regex characters → a regex string."""
    value = value.strip()
    if value.lower() == ALL_LINEAR or _REGEX_CHARACTERS & set(value):
        return value
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise LorakitError(f"{name} names no module; name at least one, e.g. query,value, or use all-linear")
    return names


def _as_name_spec(value: Any, name: str) -> list[str] | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.lower() == ALL_LINEAR:
            return ALL_LINEAR
        try:
            re.compile(value)
        except re.error as error:
            raise LorakitError(f"{name} is not a valid regex ({error}); pass a list of module names instead") from None
        return value
    if isinstance(value, (list, tuple, set)) and all(isinstance(v, str) and v for v in value):
        if not value:
            raise LorakitError(f"{name} is empty; name at least one module, or use 'all-linear'")
        return sorted(value) if isinstance(value, set) else list(value)
    raise LorakitError(f"{name} must be a list of module names, a regex string or 'all-linear'; got {value!r}")


def _as_module_names(value: Any, name: str) -> list[str] | None:
    """None, or a list of module names (one name alone becomes a list of one)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple, set)) or not all(isinstance(v, str) and v for v in value):
        raise LorakitError(f"{name} must be a list of module names or None; got {value!r}")
    return sorted(value) if isinstance(value, set) else list(value)


# Fields whose only check is their type: name → (allowed types, how a message names them).
_TYPED_FIELDS = {
    "use_rslora": ((bool,), "True or False"),
    "fan_in_fan_out": ((bool,), "True or False"),
    "lora_bias": ((bool,), "True or False"),
    "inference_mode": ((bool,), "True or False"),
    "base_model_name_or_path": ((str, type(None)), "a model name or path, or None"),
    "revision": ((str, type(None)), "a revision name or None"),
    "layers_pattern": ((str, list, type(None)), "a layer list's name, a list of them, or None"),
}


def _check_types(config: LoraConfig) -> None:
    """The fields that nothing else checks hold their types (an adapter_config.json from another
    tool may hold anything: a truthy "false" must not turn lora_bias on)."""
    for name, (types, words) in _TYPED_FIELDS.items():
        value = getattr(config, name)
        if not isinstance(value, types) or (isinstance(value, list) and not all(isinstance(v, str) for v in value)):
            raise LorakitError(f"{name} must be {words}; got {value!r}")


def _as_pattern(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LorakitError(f"{name} must be a mapping of module-name regex to value, got {value!r}")
    return dict(value)


def _check_rank(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LorakitError(f"{name} must be a positive integer, got {value!r}")


def _check_alpha(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise LorakitError(f"{name} must be a positive number, got {value!r}")


def _check_pattern_key(key: Any, name: str) -> None:
    try:
        re.compile(key)
    except (re.error, TypeError) as error:
        raise LorakitError(f"{name} key {key!r} is not a valid regex ({error})") from None


def _pattern_value(patterns: dict[str, Any], module_name: str, default: Any) -> Any:
    """PEFT's rule: the first key that matches the end of the name (at a dot boundary) wins."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module_name):
            return value
    return default
