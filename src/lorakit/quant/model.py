"""Quantize a model's frozen body to 4 bits in place (QLoRA), and back.

The order is: load the base model → `quantize_model` → `lorakit.lora.add_adapter`, so each
`LoraLinear` wraps a quantized layer; LoRA's A and B stay fp32 and are all that trains. To merge,
`dequantize_model` first (NF4 cannot hold W + B·A): the merged weights are then exactly the
dequantized weights the adapter was trained against, plus B·A.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.heap import return_freed_memory
from lorakit.lora.inject import list_adapters, replace_module
from lorakit.lora.targets import is_in_saved_module
from lorakit.quant.bnb import bnb_linear_type, bnb_stored_bytes, dequantize_bnb, quantize_bnb, require_bnb
from lorakit.quant.nf4 import BLOCK_SIZE, Nf4Linear, nf4_stored_bytes

QUANT_METHODS: tuple[str, ...] = ("nf4", "bnb-nf4")
# Output heads stay in full precision: they are small next to the body, often trained
# (modules_to_save), and their error lands straight on the logits.
OUTPUT_HEADS = ("lm_head", "classifier", "score", "qa_outputs")


def quantize_model(model: nn.Module, method: str = "nf4", skip_modules: Iterable[str] = ()) -> None:
    """Replace every nn.Linear of the model's body by a frozen 4-bit NF4 layer, in place.

    "nf4": `Nf4Linear` (torchao storage, CPU and CUDA). "bnb-nf4": bitsandbytes `Linear4bit`,
    moved to CUDA. Never quantized: output heads (`OUTPUT_HEADS`) and any module named in
    `skip_modules` (a name or dotted suffix; layers inside it too), embeddings and norms (not
    Linear), GPT-2's Conv1D. A layer whose weight size is not a multiple of 64 values stays as is,
    with a warning.

    Raises:
        LorakitError: an unknown method; bnb-nf4 without CUDA or bitsandbytes; a model that already
            carries adapters or is already quantized; nothing left to quantize.
    """
    if method not in QUANT_METHODS:
        raise LorakitError(f"unknown quantization method {method!r}; choose one of {', '.join(QUANT_METHODS)}")
    if method == "bnb-nf4":
        require_bnb()
    if list_adapters(model):
        raise LorakitError(
            "quantize the base model before adding or loading adapters (quantize_model, then add_adapter)"
        )
    if is_quantized(model):
        raise LorakitError("this model is already quantized; dequantize_model it first to quantize again")
    skip = [*OUTPUT_HEADS, *skip_modules]
    quantized, unblockable = 0, []
    for name, module in list(model.named_modules()):
        # Exactly nn.Linear: subclasses (nn.MultiheadAttention's out_proj) read `.weight` themselves.
        if type(module) is not nn.Linear or is_in_saved_module(name, skip):
            continue
        layer = quantize_bnb(module) if method == "bnb-nf4" else Nf4Linear.from_linear(module)
        if layer is None:
            unblockable.append(name)
            continue
        replace_module(model, name, layer)
        quantized += 1
    if unblockable:
        warnings.warn(
            f"left {len(unblockable)} linear layer(s) unquantized, their weight size is not a multiple of "
            f"{BLOCK_SIZE}: {', '.join(unblockable[:3])}{', ...' if len(unblockable) > 3 else ''}",
            stacklevel=2,
        )
    if not quantized:
        raise LorakitError(
            "found no nn.Linear layer to quantize (output heads, skip_modules, embeddings, norms and GPT-2 Conv1D "
            "layers stay unquantized); pass a model whose body uses nn.Linear"
        )
    return_freed_memory()


def dequantize_model(model: nn.Module, dtype: torch.dtype) -> None:
    """Turn every quantized layer (inside `LoraLinear.base_layer` too) back into an nn.Linear in `dtype`.

    The new weight is the dequantized Ŵ the model computed with, so outputs do not change beyond
    rounding to `dtype`; merging an adapter afterwards is exact with respect to training.
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, Nf4Linear):
            replace_module(model, name, module.dequantize(dtype))
        elif _is_bnb(module):
            replace_module(model, name, dequantize_bnb(module, dtype))


def quantized_weight_bytes(model: nn.Module) -> dict[str, int]:
    """What the quantized layers' weights take: stored bytes (codes and all scales) vs fp32/bf16."""
    stored = params = count = 0
    for module in model.modules():
        if isinstance(module, Nf4Linear):
            stored += nf4_stored_bytes(module.weight)
        elif _is_bnb(module):
            stored += bnb_stored_bytes(module)
        else:
            continue
        params += module.in_features * module.out_features
        count += 1
    return {
        "quantized_linear_bytes": stored,
        "fp32_bytes": 4 * params,
        "bf16_bytes": 2 * params,
        "quantized_linears": count,
    }


def is_quantized(model: nn.Module) -> bool:
    """True when any layer of `model` holds a 4-bit quantized weight."""
    return any(isinstance(module, Nf4Linear) or _is_bnb(module) for module in model.modules())


def _is_bnb(module: nn.Module) -> bool:
    bnb_type = bnb_linear_type()
    return bnb_type is not None and isinstance(module, bnb_type)
