"""Attach named adapters to a model in place, choose the active one, freeze the rest.

The model stays the same transformers object: targeted Linear/Conv1D layers are replaced by
`LoraLinear` wrappers and heads to save by `ModulesToSave` wrappers; which adapters exist and
their configs live in `model.lorakit_adapters` (an `AdapterState`).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

from torch import nn

from lorakit.errors import LorakitError
from lorakit.lora.config import LoraConfig
from lorakit.lora.layer import LoraLinear, ModulesToSave
from lorakit.lora.targets import find_targets, is_in_saved_module, matches_name, named_modules_outside

STATE_ATTRIBUTE = "lorakit_adapters"
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class AdapterState:
    """The adapters a model carries: name → config, and which one runs (None: base only)."""

    configs: dict[str, LoraConfig] = field(default_factory=dict)
    active: str | None = None


def adapter_state(model: nn.Module) -> AdapterState:
    """The model's `AdapterState`; raises when no adapter was ever added."""
    state = getattr(model, STATE_ATTRIBUTE, None)
    if state is None:
        raise LorakitError("this model has no lorakit adapter; call add_adapter or load_adapter first")
    return state


def add_adapter(
    model: nn.Module, config: LoraConfig, adapter_name: str = "default", *, activate: bool = True
) -> nn.Module:
    """Add adapter `adapter_name` to `model` in place and return the model.

    Wraps every module `config` targets in a `LoraLinear` (reusing the wrapper when another adapter
    is already there), wraps `config.heads_to_save()` in `ModulesToSave`, and, with `activate`,
    makes the new adapter the active one: only its parameters train.

    Raises:
        LorakitError: a bad or duplicate adapter name, targets that match nothing, a task head or
            module to save that the model does not have.
    """
    if not isinstance(config, LoraConfig):
        raise LorakitError(f"add_adapter needs a lorakit LoraConfig, got {type(config).__name__}")
    check_new_adapter_name(model, adapter_name)
    targets = find_targets(model, config, existing_lora_types=(LoraLinear,))
    heads = find_heads_to_save(model, config)
    inject_adapter(model, config, adapter_name, targets, heads)
    if activate or adapter_state(model).active is None:
        set_adapter(model, adapter_name)
    else:
        _update_trainable(model)
    return model


def inject_adapter(
    model: nn.Module,
    config: LoraConfig,
    adapter_name: str,
    targets: list[str],
    heads: list[str],
) -> None:
    """Create adapter `adapter_name` on exactly these modules (no matching, no activation)."""
    state = getattr(model, STATE_ATTRIBUTE, None)
    if state is None:
        state = AdapterState()
        setattr(model, STATE_ATTRIBUTE, state)
    for name in targets:
        layer = model.get_submodule(name)
        if not isinstance(layer, LoraLinear):
            layer = LoraLinear(layer)
            replace_module(model, name, layer)
        r, scaling = config.rank_and_scaling(name)
        layer.add_adapter(adapter_name, r, scaling, config.lora_dropout, config.init_lora_weights, config.lora_bias)
    for name in heads:
        wrapper = model.get_submodule(name)
        if not isinstance(wrapper, ModulesToSave):
            wrapper = ModulesToSave(wrapper)
            replace_module(model, name, wrapper)
        wrapper.add_adapter(adapter_name)
    state.configs[adapter_name] = config


def find_heads_to_save(model: nn.Module, config: LoraConfig) -> list[str]:
    """Full names of the modules to train in full and save (`modules_to_save` + the task head).

    Raises:
        LorakitError: a name in `modules_to_save` matches no module, or the task needs a head
            (SEQ_CLS: `classifier` or `score`) that the model lacks — a silently random head is
            the failure PEFT users keep hitting.
    """
    names = config.heads_to_save()
    if not names:
        return []
    found = [
        name
        for name, _ in model.named_modules()
        if name and matches_name(names, name) and not _inside_wrapper(model, name)
    ]
    # Keep the outermost match only: `classifier` and not also `classifier.dense`.
    found = [n for n in found if not any(n.startswith(f"{o}.") for o in found)]
    for wanted in config.modules_to_save or []:
        if not any(matches_name([wanted], n) for n in found):
            raise LorakitError(f"modules_to_save entry {wanted!r} matches no module of this model")
    task_heads = [h for h in names if h not in (config.modules_to_save or [])]
    if task_heads and not any(matches_name(task_heads, n) for n in found):
        raise LorakitError(
            f"task_type {config.task_type} trains the model's head, but it has none named "
            f"{' or '.join(task_heads)}; name the head in modules_to_save"
        )
    return found


def set_adapter(model: nn.Module, adapter_name: str | None) -> None:
    """Make `adapter_name` the adapter that runs and trains (None: base model only).

    A merged adapter is unmerged first (with a warning), so outputs always match the choice.
    """
    state = adapter_state(model)
    if adapter_name is not None and adapter_name not in state.configs:
        raise LorakitError(f"no adapter named {adapter_name!r}; this model has {_names(state)}")
    if any(layer.merged_adapter is not None for layer in lora_layers(model)):
        warnings.warn("an adapter is merged into the base weights; unmerging it before switching", stacklevel=2)
        for layer in lora_layers(model):
            layer.unmerge()
    _set_active(model, adapter_name)
    state.active = adapter_name
    _update_trainable(model)


@contextlib.contextmanager
def disable_adapter(model: nn.Module) -> Iterator[nn.Module]:
    """Run the base model alone inside the block: `with disable_adapter(model): base_out = model(x)`."""
    state = adapter_state(model)
    if any(layer.merged_adapter is not None for layer in lora_layers(model)):
        raise LorakitError("an adapter is merged into the base weights; call unmerge_adapter before disable_adapter")
    active = state.active
    _set_active(model, None)
    try:
        yield model
    finally:
        _set_active(model, active)


def delete_adapter(model: nn.Module, adapter_name: str) -> None:
    """Remove an adapter; wrappers left with no adapter become their original modules again."""
    state = adapter_state(model)
    if adapter_name not in state.configs:
        raise LorakitError(f"no adapter named {adapter_name!r}; this model has {_names(state)}")
    for name, module in list(named_wrappers(model)):
        if isinstance(module, LoraLinear) and adapter_name in module.lora_A:
            module.delete_adapter(adapter_name)
            if not module.lora_A:
                replace_module(model, name, module.base_layer)
        elif isinstance(module, ModulesToSave) and adapter_name in module.modules_to_save:
            module.delete_adapter(adapter_name)
            if not module.modules_to_save:
                replace_module(model, name, module.original_module)
    del state.configs[adapter_name]
    if not state.configs:
        delattr(model, STATE_ATTRIBUTE)
    elif state.active == adapter_name:
        set_adapter(model, next(iter(state.configs)))


def list_adapters(model: nn.Module) -> list[str]:
    """Names of the adapters on `model` (empty for a plain model)."""
    state = getattr(model, STATE_ATTRIBUTE, None)
    return list(state.configs) if state else []


def lora_layers(model: nn.Module) -> list[LoraLinear]:
    """Every LoraLinear of `model`, in module order."""
    return [module for _, module in named_wrappers(model) if isinstance(module, LoraLinear)]


def named_wrappers(model: nn.Module) -> Iterator[tuple[str, LoraLinear | ModulesToSave]]:
    """(path, wrapper) for every LoraLinear and ModulesToSave, in module order.

    The walk does not enter the wrappers, whose per-adapter modules grow with every adapter: with
    n adapters on the model, work per call stays O(model), not O(n · model), which keeps loading n
    adapters one by one from costing O(n²).
    """
    wrapper_types = (LoraLinear, ModulesToSave)
    return (
        (path, module)
        for path, module in named_modules_outside(model, wrapper_types)
        if isinstance(module, wrapper_types)
    )


def _update_trainable(model: nn.Module) -> None:
    """Freeze everything, then unfreeze the active adapter: its A/B, its head copies, biases."""
    state = adapter_state(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    name = state.active
    if name is None or state.configs[name].inference_mode:
        return
    config = state.configs[name]
    for _, module in named_wrappers(model):
        if isinstance(module, LoraLinear) and name in module.lora_A:
            module.lora_A[name].requires_grad_(True)
            module.lora_B[name].requires_grad_(True)
            if config.bias == "lora_only" and module.base_layer.bias is not None:
                module.base_layer.bias.requires_grad_(True)
        elif isinstance(module, ModulesToSave) and name in module.modules_to_save:
            module.modules_to_save[name].requires_grad_(True)
    if config.bias == "all":
        for _, parameter in base_bias_parameters(model):
            parameter.requires_grad_(True)


def base_bias_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Biases of the base model (not of LoRA weights, not inside heads-to-save wrappers)."""
    wrapped = [name for name, module in model.named_modules() if isinstance(module, ModulesToSave)]
    return [
        (name, parameter)
        for name, parameter in model.named_parameters()
        if name.endswith("bias") and ".lora_" not in name and not is_in_saved_module(name, wrapped)
    ]


def _set_active(model: nn.Module, adapter_name: str | None) -> None:
    for _, module in named_wrappers(model):
        module.active_adapter = adapter_name


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` at dotted path `name` of `model` in place of what is there."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _inside_wrapper(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), (LoraLinear, ModulesToSave)):
            return True
    return False


def check_new_adapter_name(model: nn.Module, adapter_name: str) -> None:
    """A usable name (it becomes part of parameter names) that the model does not use yet."""
    if not isinstance(adapter_name, str) or not _ADAPTER_NAME.match(adapter_name):
        raise LorakitError(f"adapter name {adapter_name!r} must be letters, digits, '_' or '-' (no dots or slashes)")
    if adapter_name in list_adapters(model):
        raise LorakitError(f"an adapter named {adapter_name!r} already exists; pick another name or delete_adapter it")


def _names(state: AdapterState) -> str:
    return ", ".join(map(repr, state.configs)) or "none"
