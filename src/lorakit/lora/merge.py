"""Fold adapters into the base weights and back, and strip lorakit from a model.

Merging is always an explicit call (never a side effect of `eval()`); each layer remembers
which adapter it holds (`LoraLinear.merged_adapter`), so merging twice is a no-op and
`unmerge_adapter` restores the original weights up to floating-point rounding.
"""

from __future__ import annotations

from torch import nn

from lorakit.errors import LorakitError
from lorakit.lora.inject import STATE_ATTRIBUTE, adapter_state, lora_layers, replace_module
from lorakit.lora.layer import LoraLinear, ModulesToSave


def merge_adapter(model: nn.Module, adapter_name: str | None = None) -> None:
    """W ← W + scaling·B·A in every layer of `adapter_name` (default: the active adapter).

    Outputs do not change; forward then costs exactly the base model's.
    """
    state = adapter_state(model)
    name = adapter_name or state.active
    if name is None or name not in state.configs:
        raise LorakitError(f"cannot merge adapter {name!r}: the model has {', '.join(state.configs) or 'none'}")
    if name != state.active:
        raise LorakitError(f"adapter {name!r} is not the active one ({state.active!r}); set_adapter it before merging")
    for layer in lora_layers(model):
        if name in layer.lora_A:
            layer.merge(name)


def unmerge_adapter(model: nn.Module) -> None:
    """W ← W − scaling·B·A for whichever adapter is merged (no-op when none is)."""
    for layer in lora_layers(model):
        layer.unmerge()


def merge_and_unload(model: nn.Module, adapter_name: str | None = None) -> nn.Module:
    """Merge the active adapter (or `adapter_name`) and return the plain transformers model.

    Every `LoraLinear` becomes its base layer holding W + scaling·B·A, every `ModulesToSave`
    becomes the trained copy of that adapter; nothing of lorakit is left, so
    `save_pretrained` writes a folder that transformers alone loads.
    """
    state = adapter_state(model)
    name = adapter_name or state.active
    if name is not None and name != state.active:
        raise LorakitError(f"adapter {name!r} is not the active one ({state.active!r}); set_adapter it first")
    if name is not None:
        merge_adapter(model, name)
    return _unwrap(model, keep=name)


def unload(model: nn.Module) -> nn.Module:
    """Remove every adapter without merging: the original base model comes back."""
    unmerge_adapter(model)
    return _unwrap(model, keep=None)


def _unwrap(model: nn.Module, keep: str | None) -> nn.Module:
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLinear):
            replace_module(model, name, module.base_layer)
        elif isinstance(module, ModulesToSave):
            kept = module.modules_to_save[keep] if keep in module.modules_to_save else module.original_module  # noqa: SIM401 (ModuleDict has no get)
            replace_module(model, name, kept)
    delattr(model, STATE_ATTRIBUTE)
    return model
