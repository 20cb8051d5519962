r"""The LoRA term of a mixed batch: y[i] += s_i · B_i·A_i·x[i], row i on its own adapter's slot.

Ways to compute it from the packed stacks A (slots, r, in) and B (slots, r, out) (scaling in B):

- **one adapter for every row**: plain LoRA, (x·A_sᵀ)·B_s.
- **gather + bmm** (any number of tokens per row): A[slot] and B[slot] are copied out per row,
  then two batched matmuls. Right for prefill, where the matmuls dominate the copies.
- **fused gather-reduce** (one token per row: decoding): `Σ_k A[slot_i, :, k]·x[i, k]` and
  `Σ_r low[i, r]·B[slot_i, r, :]` written as elementwise products and sums, which torch.compile
  turns into loops that read each row's weights where they lie, never copying them out: the BGMV
  kernel of Punica/S-LoRA. With one token per row a batched matmul is a batch of matrix-vector
  products, which BLAS runs poorly, and the copies cost as much as the products.

Measured on one CPU thread, batch 128, r=8 (`benchmarks/serve_mixed.py --kernels`), a 576→1536
decode step's LoRA term with 8 to 128 adapters: bf16 0.71-0.74 ms gathered against 0.27 ms fused
(the base Linear itself: 1.09 ms); fp32 0.39-0.49 ms against 0.22-0.26 ms (base 2.3 ms). A pair
of matmuls per adapter (SGMV-like) wins only when one or a few adapters share the batch, and
loses badly with many (5.4 ms for 128 in bf16). The fused kernel compiles once per dtype and shape
family (seconds, on the first decoding batch); where it cannot compile (no C++ compiler,
`LORAKIT_COMPILE=0`), decoding falls back to gather + bmm with one logged warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import torch

from lorakit.serve.kernels.slots import PackedLora

logger = logging.getLogger("lorakit.serve")

_fused: dict[str, Callable | None] = {}  # "kernel": the compiled decode kernel, None once it failed


def add_lora_delta_(
    result: torch.Tensor,
    x: torch.Tensor,
    packed: PackedLora,
    slot: torch.Tensor,
    shared_slot: int | None = None,
) -> torch.Tensor:
    """result[i] += s_i · B_i·A_i·x[i] in place, for x (batch, ..., in), result (batch, ..., out);
    slot (batch,) long indexes the stacks, whose slot 0 is zero (rows without an adapter).

    shared_slot: the slot of every row, when they all share one adapter: then it is plain LoRA,
    two matmuls on that adapter's weights, nothing gathered.
    """
    batch = x.shape[0]
    out = result.view(batch, -1, result.shape[-1])
    if shared_slot is not None:
        # A·xᵀ, not x·Aᵀ: the thin product runs along contiguous rows (2× faster on a CPU).
        low = torch.mm(packed.A[shared_slot], x.reshape(-1, x.shape[-1]).T)  # (r, batch·L)
        up, flat_out = packed.B[shared_slot], out.view(-1, out.shape[-1])
        if low.dtype == flat_out.dtype:
            flat_out.addmm_(low.T, up.to(flat_out.dtype))
        else:  # fp32 adapters on a half-precision base: summed in fp32, as LoraLinear does
            flat_out.add_((low.T @ up).to(flat_out.dtype))
        return _add_bias_(out, packed, slot, result)
    if out.shape[1] == 1 and not torch.is_grad_enabled():
        delta = _fused_decode(x.reshape(batch, x.shape[-1]), packed.A, packed.B, slot)
        if delta is not None:
            out.add_(delta.unsqueeze(1).to(out.dtype))
            return _add_bias_(out, packed, slot, result)
    _gather_bmm_(out, x.reshape(batch, -1, x.shape[-1]), packed, slot)
    return _add_bias_(out, packed, slot, result)


def _gather_bmm_(out: torch.Tensor, x: torch.Tensor, packed: PackedLora, slot: torch.Tensor) -> None:
    """out (batch, L, out) += (A[slot] @ xᵀ)ᵀ @ B[slot].

    `A_rows @ xᵀ` (batch, r, L) runs along both operands' contiguous axes (0.5 ms on one CPU thread
    for 32×128×384, r=8, where `x @ A_rowsᵀ` took 1.9 ms), and the second product accumulates
    straight into `out` (`baddbmm_`) instead of filling a new (batch, L, out) tensor, whose fresh
    allocation alone costs page faults.
    """
    low = torch.bmm(packed.A.index_select(0, slot), x.transpose(1, 2)).transpose(1, 2)  # (batch, L, r)
    up = packed.B.index_select(0, slot)
    if low.dtype == out.dtype:
        out.baddbmm_(low, up.to(out.dtype))
    else:  # fp32 adapters on a half-precision base: the update is summed in fp32, as LoraLinear does
        out.add_(torch.bmm(low, up))


def _add_bias_(out: torch.Tensor, packed: PackedLora, slot: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
    if packed.bias is not None:
        out.add_(packed.bias.index_select(0, slot).unsqueeze(1).to(out.dtype))
    return result


def decode_delta(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """(batch, out) fp32: s_i · B_i·A_i·x_i for x (batch, in), as products and sums over the stacks
    indexed in place (what the compiler fuses). Accumulates in fp32 whatever the stacks' dtype."""
    low = (A[slot].float() * x.float().unsqueeze(1)).sum(-1)  # (batch, r)
    return (low.unsqueeze(-1) * B[slot].float()).sum(1)


def _fused_decode(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, slot: torch.Tensor) -> torch.Tensor | None:
    """decode_delta compiled, or None when compiling is off or failed (the caller gathers instead)."""
    if "kernel" not in _fused:
        enabled = os.environ.get("LORAKIT_COMPILE", "1") != "0"
        _fused["kernel"] = torch.compile(decode_delta, dynamic=True) if enabled else None
    kernel = _fused["kernel"]
    if kernel is None:
        return None
    try:
        return kernel(x, A, B, slot)
    except Exception as error:
        _fused["kernel"] = None
        logger.warning(
            "the fused LoRA decode kernel could not compile (%s: %s); decoding uses gather + bmm instead",
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else "",
        )
        return None
