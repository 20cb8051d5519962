"""The LoRA method: config, layer, injection, merging, PEFT-format I/O. Knows nothing of training."""

from lorakit.lora.combine import combine_adapters
from lorakit.lora.config import LoraConfig
from lorakit.lora.inject import (
    add_adapter,
    delete_adapter,
    disable_adapter,
    list_adapters,
    set_adapter,
)
from lorakit.lora.io import adapter_state_dict, load_adapter, read_adapter, save_adapter
from lorakit.lora.layer import LoraLinear, ModulesToSave
from lorakit.lora.merge import merge_adapter, merge_and_unload, unload, unmerge_adapter
from lorakit.lora.params import format_trainable_parameters, trainable_parameters

__all__ = [
    "LoraConfig",
    "LoraLinear",
    "ModulesToSave",
    "adapter_state_dict",
    "add_adapter",
    "combine_adapters",
    "delete_adapter",
    "disable_adapter",
    "format_trainable_parameters",
    "list_adapters",
    "load_adapter",
    "merge_adapter",
    "merge_and_unload",
    "read_adapter",
    "save_adapter",
    "set_adapter",
    "trainable_parameters",
    "unload",
    "unmerge_adapter",
]
