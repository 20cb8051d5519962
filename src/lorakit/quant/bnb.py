"""bitsandbytes' `Linear4bit` (NF4, double-quantized scales) as the quantized base, CUDA only.

bitsandbytes quantizes when the weight moves to the GPU (`Params4bit.to("cuda")`), so each layer
is sent to CUDA here; the rest of the model must follow it there. Its forward and backward are
bitsandbytes' own (`bnb.matmul_4bit`). Not exercised on machines without a GPU: the tests that
need one skip there.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import torch
from torch import nn

from lorakit.errors import LorakitError


def require_bnb() -> Any:
    """The imported `bitsandbytes` module; a LorakitError naming what is missing otherwise."""
    missing = [
        what
        for what, present in (
            ("a CUDA GPU", torch.cuda.is_available()),
            ("the bitsandbytes package", importlib.util.find_spec("bitsandbytes") is not None),
        )
        if not present
    ]
    if missing:
        raise LorakitError(
            f"quantization 'bnb-nf4' needs {' and '.join(missing)}; use 'nf4' (torchao, runs on CPU and CUDA)"
        )
    import bitsandbytes

    return bitsandbytes


def bnb_linear_type() -> type[nn.Module] | None:
    """`bitsandbytes.nn.Linear4bit` when bitsandbytes is loaded (else no layer can be one)."""
    bnb = sys.modules.get("bitsandbytes")
    return None if bnb is None else bnb.nn.Linear4bit


def quantize_bnb(linear: nn.Linear) -> nn.Module:
    """`linear` as a CUDA `Linear4bit` holding its weight in NF4, the way bitsandbytes documents:
    build the layer, load the full-precision weights into it, move it to the GPU (that quantizes)."""
    bnb = require_bnb()
    layer = bnb.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compress_statistics=True,
        quant_type="nf4",
        device=linear.weight.device,
    )
    layer.load_state_dict(linear.state_dict())
    layer.weight.requires_grad_(False)
    return layer.to("cuda")


def dequantize_bnb(layer: nn.Module, dtype: torch.dtype) -> nn.Linear:
    """A plain nn.Linear holding the dequantized `Linear4bit` weight (and its bias) in `dtype`."""
    bnb = require_bnb()
    weight = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).to(dtype)
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta", dtype=dtype)
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if layer.bias is not None:
        linear.bias = nn.Parameter(layer.bias.detach().to(dtype), requires_grad=layer.bias.requires_grad)
    return linear


def bnb_stored_bytes(layer: nn.Module) -> int:
    """Packed codes plus the quantization state: block scales and, when nested, their own scales."""
    state = layer.weight.quant_state
    tensors = [layer.weight.data, state.absmax, state.code]
    if state.nested:
        tensors += [state.state2.absmax, state.state2.code, state.offset]
    return sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor))
