"""Which modules of a model a `LoraConfig` targets, with PEFT's matching rules.

A module name is its full dotted path in `model.named_modules()`, e.g.
`bert.encoder.layer.0.attention.self.query`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator

from torch import nn
from transformers.pytorch_utils import Conv1D

from lorakit.errors import LorakitError, option_name, option_setting
from lorakit.lora.config import ALL_LINEAR, LoraConfig

LINEAR_TYPES = (nn.Linear, Conv1D)

# Default targets per architecture (config.model_type) when target_modules is None: the
# attention projections, as PEFT's presets.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta-v2": ["query_proj", "value_proj"],
    "t5": ["q", "v"],
    "mt5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "gpt_bigcode": ["c_attn"],
    "gpt_neox": ["query_key_value"],
    "opt": ["q_proj", "v_proj"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "mixtral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "qwen3": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "gemma2": ["q_proj", "v_proj"],
    "phi": ["q_proj", "v_proj", "fc1", "fc2"],
    "phi3": ["qkv_proj"],
}


def matches_name(spec: list[str] | str, name: str) -> bool:
    """PEFT's name rule: a regex string must match the whole name; a list entry must equal the
    name or be a dotted suffix of it (`"query"` matches `...self.query`, not `...self.xquery`)."""
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return name in spec or any(name.endswith(f".{entry}") for entry in spec)


def is_in_saved_module(name: str, modules_to_save: list[str]) -> bool:
    """True when `name` is a module to save or lies inside one (those are never LoRA targets)."""
    return any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", name) for m in modules_to_save)


def layer_index(name: str, layers_pattern: list[str] | str | None) -> int | None:
    """The index of the transformer block a module lives in, or None.

    Without `layers_pattern` it is the first number standing alone between dots
    (`model.layers.3.self_attn.q_proj` → 3); with it, the number after that list's name.
    """
    if not layers_pattern:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)
        return int(match["idx"]) if match else None
    for pattern in [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern:
        match = re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", name)
        if match:
            return int(match["idx"])
    return None


def resolve_target_spec(model: nn.Module, config: LoraConfig) -> list[str] | str:
    """`config.target_modules` made concrete for this model (presets and "all-linear" expanded)."""
    spec = config.target_modules
    if spec is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in DEFAULT_TARGETS:
            raise LorakitError(
                f"no default target_modules for model type {model_type!r}; pass "
                f"{option_setting('target_modules', '<layer names>')} (e.g. q_proj,v_proj) or all-linear"
            )
        return DEFAULT_TARGETS[model_type]
    if spec == ALL_LINEAR:
        excluded = {name for name in _head_names(model, config)}
        return sorted(
            name for name, module in model.named_modules() if isinstance(module, LINEAR_TYPES) and name not in excluded
        )
    return spec


def find_targets(model: nn.Module, config: LoraConfig, existing_lora_types: tuple[type, ...] = ()) -> list[str]:
    """Full names of the Linear/Conv1D modules `config` puts LoRA on, in model order.

    `existing_lora_types` are wrapper classes already in the model: their own children
    (`lora_A`, `base_layer`, ...) are never targets, the wrapper itself may be.

    Raises:
        LorakitError: a name in the spec matches nothing, or matches a module that is not
            Linear/Conv1D; the message lists close matches.
    """
    spec = resolve_target_spec(model, config)
    saved = config.heads_to_save()
    targets = []
    matched_non_linear = []
    for name, module in named_modules_outside(model, existing_lora_types):
        if is_in_saved_module(name, saved):
            continue
        if config.exclude_modules and matches_name(config.exclude_modules, name):
            continue
        if not matches_name(spec, name):
            continue
        # As in PEFT, the layer filter applies to suffix matches only, not to names given in full.
        if not isinstance(spec, str) and name not in spec and config.layers_to_transform is not None:
            wanted = config.layers_to_transform
            index = layer_index(name, config.layers_pattern)
            if index is None or index not in ([wanted] if isinstance(wanted, int) else wanted):
                continue
        if isinstance(module, LINEAR_TYPES + existing_lora_types):
            targets.append(name)
        else:
            matched_non_linear.append(f"{name} ({type(module).__name__})")
    if not targets:
        raise LorakitError(_no_match_message(model, spec, matched_non_linear))
    # Every name the user listed must name some Linear layer (exclusions and layer filters may
    # then drop it on purpose); presets and "all-linear" are not listed names.
    if isinstance(config.target_modules, list):
        linear = [
            n
            for n, m in named_modules_outside(model, existing_lora_types)
            if isinstance(m, LINEAR_TYPES + existing_lora_types)
        ]
        unused = [entry for entry in spec if not any(matches_name([entry], n) for n in linear)]
        if unused:
            raise LorakitError(_no_match_message(model, unused, matched_non_linear))
    return targets


def linear_module_names(model: nn.Module) -> list[str]:
    """Full names of every Linear/Conv1D module, in model order."""
    return [name for name, module in model.named_modules() if isinstance(module, LINEAR_TYPES)]


def _head_names(model: nn.Module, config: LoraConfig) -> list[str]:
    """The output head that "all-linear" leaves alone: the LM head, or (SEQ_CLS) the classifier."""
    names = []
    get_output = getattr(model, "get_output_embeddings", None)
    output = get_output() if callable(get_output) else None
    heads = [output] if output is not None else []
    if output is None and config.task_type == "SEQ_CLS":
        heads = [getattr(model, h, None) for h in ("classifier", "score")]
    for head in heads:
        if head is None:
            continue
        names += [name for name, module in model.named_modules() if module is head]
        break
    return names


def named_modules_outside(model: nn.Module, wrapper_types: tuple[type, ...]) -> Iterator[tuple[str, nn.Module]]:
    """`model.named_modules()` without the root and without the children of `wrapper_types`
    modules (the wrappers themselves are yielded): those children (`lora_A`, `base_layer`, …)
    are never targets, and skipping them keeps the walk O(model) however many adapters it holds."""
    seen: set[int] = set()

    def walk(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module]]:
        for name, child in module.named_children():
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}.{name}" if prefix else name
            yield path, child
            if not isinstance(child, wrapper_types):
                yield from walk(child, path)

    return walk(model, "")


def _no_match_message(model: nn.Module, spec: list[str] | str, non_linear: list[str]) -> str:
    leaf_names = sorted({name.rsplit(".", 1)[-1] for name in linear_module_names(model)})
    wanted = [spec] if isinstance(spec, str) else list(spec)
    close = sorted(
        {m for w in wanted for m in difflib.get_close_matches(w.rsplit(".", 1)[-1], leaf_names, n=3, cutoff=0.5)}
    )
    message = f"{option_name('target_modules')} {', '.join(map(repr, wanted))} matched no Linear layer"
    if non_linear:
        message += f" (matched non-Linear modules: {', '.join(non_linear[:3])})"
    if close:
        message += f"; close matches: {', '.join(close)}"
    message += f"; Linear layers in this model: {', '.join(leaf_names[:20])}"
    return message
