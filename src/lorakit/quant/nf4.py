r"""A frozen Linear whose weight is stored in 4-bit NormalFloat (NF4), the QLoRA base format.

    W : (out, in), flattened and cut into blocks of 64 consecutive values
    block b:  s_b = max |W_b|                   (absmax, one scale per block)
              code = argmin_k |W_bj / s_b - nf4[k]|   (4 bits; nf4 = 16 quantiles of N(0, 1) scaled to [-1, 1])
    stored:   two codes per byte, high nibble first        0.5 byte/param
              s_b - mean(s) as int8 in groups of ≤ 256     1/64 byte/param  ("double quantization")
              one fp32 factor per group, the mean, the 16-entry table
    read:     Ŵ_bj = nf4[code_bj] · ŝ_b                    ≈ 4.1 bits/param in all

torchao's `to_nf4` does the quantizing and owns the storage (`NF4Tensor`: state dict, `.to(device)`).
Reading it back is ours: torchao's `get_original_weight` widens every code to int64 and gathers
twice (11 ms for a 1536×576 weight on one core of this CPU); a 256-entry table that turns one
byte into both of its values, each pair packed as one 64-bit word, does the same in ~1 ms.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor, to_nf4

BLOCK_SIZE = 64  # values per absmax scale: the QLoRA paper's choice
MAX_SCALER_BLOCK_SIZE = 256  # scales per int8 group (torchao's default)


def nf4_block_sizes(numel: int) -> tuple[int, int] | None:
    """`(block_size, scaler_block_size)` for a weight of `numel` values, or None if it cannot be blocked.

    torchao needs `numel % block_size == 0` and `n_blocks % scaler_block_size == 0`: the scaler
    groups take the largest divisor of `n_blocks` up to 256 (e.g. 216 for SmolLM2's 576×576
    projections, whose 5184 blocks 256 does not divide). A smaller group only stores a few more
    fp32 factors; it never changes the 4-bit codes.
    """
    if numel % BLOCK_SIZE:
        return None
    n_blocks = numel // BLOCK_SIZE
    scaler_block_size = max(d for d in range(1, min(n_blocks, MAX_SCALER_BLOCK_SIZE) + 1) if n_blocks % d == 0)
    return BLOCK_SIZE, scaler_block_size


def quantize_nf4(weight: torch.Tensor) -> NF4Tensor | None:
    """`weight` (out, in) as a torchao NF4Tensor (quantized from fp32), or None when it cannot be blocked."""
    sizes = nf4_block_sizes(weight.numel())
    if sizes is None:
        return None
    return to_nf4(weight.detach().float().contiguous(), *sizes)


def dequantize_nf4(weight: NF4Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Ŵ (out, in) in `dtype`: Ŵ_bj = nf4[code_bj] · ŝ_b, with ŝ_b = int8_b / factor_g + mean.

    Computed in fp32, where it equals torchao's `get_original_weight()` bit for bit, then rounded
    once to `dtype`: a bf16 Ŵ is exactly the fp32 Ŵ in bf16 (and costs the same: ~1.5 ms for
    1536×576 on one core, next to ~19 ms for the bf16 matmul of 1024 tokens it feeds).
    """
    table = weight.nf4.float()
    pairs = torch.stack([table.repeat_interleave(16), table.repeat(16)], dim=-1)  # (256, 2): byte → (hi, lo)
    # Each fp32 pair viewed as one int64 word: a single index_select fetches both values of a byte.
    words = pairs.view(torch.int64).view(256)
    values = words.index_select(0, weight.quantized_data.int()).view(torch.float32)  # (numel,)
    scaler_groups = weight.quantized_scalers.view(-1, weight.scaler_block_size).float()
    scales = (scaler_groups / weight.quantization_factor.float()[:, None]).flatten() + weight.scaler_mean.float()
    blocks = values.view(weight.n_blocks, weight.block_size) * scales[:, None]
    return blocks.view(weight.shape).to(dtype)


def nf4_stored_bytes(weight: NF4Tensor) -> int:
    """Every byte the NF4 weight holds: codes, int8 scales, group factors, mean, code table."""
    inner, _ = weight.__tensor_flatten__()
    return sum(getattr(weight, name).nbytes for name in inner)


class _Nf4Matmul(torch.autograd.Function):
    """y = x·Ŵᵀ in `dtype`, with Ŵ dequantized from NF4 in the forward and again in the backward.

    Only the input gets a gradient (dL/dx = dL/dy·Ŵ): the NF4 weight is frozen. Ŵ is rebuilt in
    the backward rather than saved, so no full-precision copy of the weight outlives one matmul.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: NF4Tensor, dtype: torch.dtype) -> torch.Tensor:
        """y = x·Ŵᵀ with Ŵ = dequant(weight) in `dtype`; x (..., in) → (..., out)."""
        ctx.weight, ctx.dtype, ctx.input_dtype = weight, dtype, x.dtype
        return F.linear(x.to(dtype), dequantize_nf4(weight, dtype))

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        """dL/dx = dL/dy·Ŵ (Ŵ rebuilt, not saved); no gradient for the frozen weight."""
        grad_input = grad_output.to(ctx.dtype) @ dequantize_nf4(ctx.weight, ctx.dtype)
        return grad_input.to(ctx.input_dtype), None, None


class Nf4Linear(nn.Linear):
    """`y = x·Ŵᵀ + b` with Ŵ (out, in) frozen in NF4 and b the original bias (trainable if it was).

    Shapes: x (..., in_features) → y (..., out_features). The matmul runs in the autocast dtype
    when autocast is on (Ŵ dequantized straight into bf16), else in x's dtype.

    An nn.Linear subclass, as bitsandbytes' Linear4bit and torchtune's FrozenNF4Linear are, so
    LoRA target matching ("q_proj", "all-linear") finds it like the layer it replaces.
    """

    def __init__(self, weight: NF4Tensor, bias: nn.Parameter | None) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a full-precision weight
        self.out_features, self.in_features = weight.shape
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = bias

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Nf4Linear | None:
        """The quantized counterpart of `linear`, or None when its weight cannot be blocked. A weight
        already in NF4 (quantized while loading, see quant/loading.py) is taken as it is."""
        weight = linear.weight if isinstance(linear.weight, NF4Tensor) else quantize_nf4(linear.weight)
        return None if weight is None else cls(weight, linear.bias)

    def dequantize(self, dtype: torch.dtype) -> nn.Linear:
        """A plain nn.Linear holding Ŵ (and the bias) in `dtype`, on the same device."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta", dtype=dtype)
        linear.weight = nn.Parameter(dequantize_nf4(self.weight, dtype), requires_grad=False)
        if self.bias is not None:
            linear.bias = nn.Parameter(self.bias.detach().to(dtype), requires_grad=self.bias.requires_grad)
        return linear

    def _apply(self, fn: Any, recurse: bool = True) -> Nf4Linear:
        # `model.to(dtype)` / `.half()` would hand the NF4 weight to `Tensor.to(dtype)`, which
        # dequantizes it, and torch would keep that full-precision copy inside the parameter: the
        # memory QLoRA saves, silently gone. The weight follows device moves only; everything
        # else (the bias) converts as usual.
        weight = self._parameters.pop("weight")
        try:
            super()._apply(fn, recurse)
            device = fn(torch.empty(0, device=weight.device)).device
            if device != weight.device:
                weight = nn.Parameter(weight.to(device), requires_grad=False)
        finally:
            self._parameters["weight"] = weight
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) → x·Ŵᵀ + b in autocast's dtype (else x's), Ŵ dequantized per call."""
        device_type = x.device.type
        autocast = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type) if autocast else x.dtype
        y = _Nf4Matmul.apply(x, self.weight, dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        """Shapes and the NF4 block sizes, for `print(model)`."""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"nf4 block={self.weight.block_size}, scaler block={self.weight.scaler_block_size}"
        )
