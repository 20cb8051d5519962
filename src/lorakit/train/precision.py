"""Choosing the compute dtype for a device, and the autocast context that applies it."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from lorakit.errors import LorakitError


def resolve_precision(requested: str, device: torch.device) -> str:
    """ "auto" → bf16 where the hardware runs it fast (CUDA with bf16, CPUs with AVX-512 bf16/AMX),
    else fp32. An explicit choice the device cannot run is an error."""
    bf16_ok = (
        torch.cuda.is_bf16_supported()
        if device.type == "cuda"
        else device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
    if requested == "auto":
        return "bf16" if bf16_ok else "fp32"
    if requested == "bf16" and not bf16_ok:
        raise LorakitError(f"precision bf16 is not supported on this {device.type} device; use --precision fp32")
    if requested == "fp16" and device.type != "cuda":
        raise LorakitError("precision fp16 needs a CUDA device; use --precision bf16 or fp32 on CPU")
    return requested


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Matmuls in bf16/fp16 with fp32 accumulation where it matters; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def storage_dtype(precision: str) -> torch.dtype:
    """The dtype frozen weights are kept in for `precision`: bf16/fp16 for half precision, else fp32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def cast_frozen_parameters(model: nn.Module, precision: str) -> None:
    """Store frozen weights in half precision: autocast would otherwise re-cast every frozen fp32
    weight on every step, and half storage halves the base model's memory. Trainable
    parameters stay fp32 so optimizer updates keep their precision."""
    if precision == "fp32":
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    for parameter in model.parameters():
        # Tensor subclasses (a 4-bit NF4 base) keep their own storage: `.to` would dequantize them.
        if not parameter.requires_grad and parameter.dtype.is_floating_point and type(parameter.data) is torch.Tensor:
            parameter.data = parameter.data.to(dtype)
