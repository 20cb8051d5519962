"""Quantize while loading: each body Linear's weight becomes NF4 the moment transformers sets it.

Loading a checkpoint and then quantizing it materialises the whole model in full precision
first: a 1.7B model peaks at 8.6 GiB in fp32 before shrinking to ~1.9 GiB in NF4, and a 7B
one would need ~28 GiB. Here transformers still does all the reading (shards, key renames,
dtype conversion, tied weights), building the model on the meta device as it always does, but
while it loads, a torch parameter-registration hook swaps every Linear weight that QLoRA
quantizes for its NF4 form as soon as it arrives, so the full-precision copy lives for one
tensor only. The load peaks near the final NF4 size plus the largest single tensor, given that
transformers reads one tensor at a time without mapping the file (`low_memory_loading`, which
`load_model` applies; measured on a 242M-parameter bf16 checkpoint: 897 MiB peak, against 1.8 GiB
for loading in fp32 and quantizing after).

Which weights: those of `nn.Linear` modules, except output heads (`OUTPUT_HEADS`, matched by the
attribute name they are registered under, as `quantize_model` skips them) and weights whose size
cannot be blocked; afterwards each such Linear is replaced by an `Nf4Linear` holding the same
NF4 tensor, so the result equals `load_model` + `quantize_model` exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.module import (
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor

from lorakit.heap import return_freed_memory
from lorakit.models.low_memory import low_memory_loading
from lorakit.quant.nf4 import quantize_nf4


@contextlib.contextmanager
def quantizing_linears(head_names: tuple[str, ...]) -> Iterator[None]:
    """While active, a weight set on an `nn.Linear` is stored as NF4 (see the module docstring);
    Linears registered under a name in `head_names` keep their weights as loaded."""
    heads: set[int] = set()

    def note_heads(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
        if name in head_names and submodule is not None:
            heads.add(id(submodule))

    def to_nf4(module: nn.Module, name: str, parameter: nn.Parameter | None) -> nn.Parameter | None:
        if not _quantizable(module, name, parameter) or id(module) in heads:
            return None
        weight = quantize_nf4(parameter.detach())
        if weight is None:  # not a multiple of the block size: stays as loaded
            return None
        # The full-precision tensors quantized so far are freed, but glibc keeps their pages in
        # its heap (fragmented by the small NF4 allocations between them): hand them back.
        return_freed_memory()
        quantized = nn.Parameter(weight, requires_grad=False)
        quantized._is_hf_initialized = True  # transformers must not re-initialise a loaded weight
        return quantized

    with (
        low_memory_loading(),
        _hooks(register_module_module_registration_hook(note_heads)),
        _hooks(register_module_parameter_registration_hook(to_nf4)),
    ):
        yield


def _quantizable(module: nn.Module, name: str, parameter: nn.Parameter | None) -> bool:
    """A weight of an exact nn.Linear read from the checkpoint (transformers marks those
    `_is_hf_initialized`; a missing weight is initialised later, in place), not yet quantized."""
    return (
        name == "weight"
        and type(module) is nn.Linear
        and parameter is not None
        and getattr(parameter, "_is_hf_initialized", False)
        and parameter.device.type != "meta"
        and not isinstance(parameter.data, NF4Tensor)
        and parameter.dtype.is_floating_point
    )


@contextlib.contextmanager
def _hooks(handle: torch.utils.hooks.RemovableHandle) -> Iterator[None]:
    try:
        yield
    finally:
        handle.remove()


def load_nf4(load: Callable[[], nn.Module], head_names: tuple[str, ...]) -> nn.Module:
    """`load()` (a transformers `from_pretrained` call) with body Linear weights quantized to NF4 as
    they load; returns the model with its body Linears as `Nf4Linear`, as `quantize_model` leaves
    it (which also quantizes any Linear the checkpoint did not hold, once initialised)."""
    from lorakit.quant.model import quantize_model

    with quantizing_linears(head_names):
        model = load()
    quantize_model(model, "nf4")
    return model
