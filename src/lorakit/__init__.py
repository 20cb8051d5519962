"""lorakit: LoRA fine-tuning of pretrained transformers, with adapters in the PEFT format."""

from lorakit import _third_party_logs  # noqa: F401 (first: silences noise before transformers loads)
from lorakit.errors import LorakitError
from lorakit.lora import (
    LoraConfig,
    adapter_state_dict,
    add_adapter,
    combine_adapters,
    delete_adapter,
    disable_adapter,
    format_trainable_parameters,
    list_adapters,
    load_adapter,
    merge_adapter,
    merge_and_unload,
    save_adapter,
    set_adapter,
    trainable_parameters,
    unload,
    unmerge_adapter,
)

__version__ = "0.1.0"

__all__ = [
    "LoraConfig",
    "LorakitError",
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
    "save_adapter",
    "set_adapter",
    "trainable_parameters",
    "unload",
    "unmerge_adapter",
]
