r"""Causal-LM cross-entropy in chunks, so the (tokens × vocab) logits never exist at once.

    h  : (n, d)  final hidden states at the n positions whose next token is labelled
    W  : (V, d)  the LM head (tied to the input embeddings or not), b its bias if any
    z_i = W·h_i + b                      logits of position i, (V,)
    loss = Σ_i logsumexp(z_i) − z_i[y_i]                     (summed; callers divide by n)
    ∂loss/∂h_i = Wᵀ·(softmax(z_i) − onehot(y_i))

A vocabulary of 49,152 (SmolLM2) to 150k (Qwen) makes z of a 4 × 512-token batch 0.4–1.2 GB in
fp32, and the plain path keeps it (and its gradient) alive through the backward. Here the rows
go through the head `chunk_rows(V)` at a time (≤ 64 MiB of fp32 logits per chunk):

- a frozen plain head (the usual LoRA case): each chunk's gradient ∂loss/∂h is computed in the
  forward, as Liger-Kernel's fused linear cross-entropy does, and only that (n, d) result is
  kept; backward just scales it. Nothing is recomputed.
- a head that trains (LoRA on lm_head, modules_to_save): each chunk runs under torch's
  non-reentrant checkpoint, so its logits are recomputed in backward and the head's own
  gradients flow as usual.

The matmul runs in the autocast dtype when autocast is on (as the model's own head would), the
softmax and loss in fp32, so loss and gradients equal `cross_entropy(model(...).logits.float())`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
CHUNK_BYTES = 64 * 2**20  # fp32 logits per chunk: small next to activations, big enough for fast matmuls
# Configs whose causal-LM forward changes the logits after the head (Gemma 2/3 soft-capping,
# Cohere's scale, Granite's divisor, Falcon-H1's multiplier): there the plain path is the exact one.
LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling", "lm_head_multiplier")


def chunk_rows(vocab_size: int) -> int:
    """Rows per chunk: the largest power of two whose fp32 logits fit CHUNK_BYTES (at least 16)."""
    rows = 16
    while rows * 2 * vocab_size * 4 <= CHUNK_BYTES:
        rows *= 2
    return rows


def supports_chunked_loss(model: nn.Module) -> bool:
    """Whether `model` computes its logits as `lm_head(base_model(...).last_hidden_state)` and nothing
    more: a transformers causal LM with a separate body and head and no logit post-processing. Not
    when it is sharded with FSDP: the chunks call body and head apart, outside the model's own
    forward, where its shards are not gathered."""
    core = getattr(model, "module", model)
    if isinstance(core, FSDPModule):
        return False
    base = getattr(core, "base_model", None)
    head = core.get_output_embeddings() if hasattr(core, "get_output_embeddings") else None
    if base is None or base is core or not isinstance(head, nn.Module):
        return False
    if "logits_to_keep" not in inspect.signature(core.forward).parameters:
        return False
    config = getattr(core, "config", None)
    return not any(getattr(config, name, None) not in (None, 1, 1.0) for name in LOGIT_POSTPROCESSING)


def chunked_causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the labelled next tokens of `batch` (input_ids (B, L), labels (B, L)
    with -100 where unlabelled, plus attention_mask / position_ids), equal to the model's own
    shifted loss, with the LM head and loss computed in chunks. See `supports_chunked_loss`."""
    total, count = chunked_causal_lm_loss_sum(model, batch)
    return total / max(count, 1)


def chunked_causal_lm_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """The summed cross-entropy over `batch`'s labelled next tokens, and how many there are."""
    labels = batch["labels"]
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    hidden = model.base_model(**inputs, use_cache=False).last_hidden_state  # (B, L, d)
    next_labels = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = next_labels != IGNORE_INDEX
    targets = next_labels[keep]
    return chunked_head_loss(hidden[keep], targets, model.get_output_embeddings()), int(targets.numel())


def chunked_head_loss(hidden: torch.Tensor, targets: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """Σ_i cross-entropy(head(hidden_i), targets_i) over hidden (n, d), targets (n,), in chunks."""
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0  # no labelled token: a zero that still has a graph
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    rows = chunk_rows(head.weight.shape[0])
    if not torch.is_grad_enabled():  # evaluation: the loss alone, chunk by chunk
        return sum(_chunk_loss(head, hidden[i : i + rows], targets[i : i + rows]) for i in range(0, len(hidden), rows))
    frozen_linear = type(head) is nn.Linear and not any(p.requires_grad for p in head.parameters())
    if frozen_linear:
        return _FrozenHeadLoss.apply(hidden, targets, head.weight, head.bias, rows, dtype)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], rows):
        part = checkpoint(
            _chunk_loss, head, hidden[start : start + rows], targets[start : start + rows], use_reentrant=False
        )
        total = total + part
    return total


def _chunk_loss(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(head(hidden).float(), targets, reduction="sum")


class _FrozenHeadLoss(torch.autograd.Function):
    """Σ cross-entropy(h·Wᵀ + b) with ∂/∂h computed chunk by chunk in the forward (W, b frozen)."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        targets: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        rows: int,
        dtype: torch.dtype | None,
    ) -> torch.Tensor:
        """The summed loss; ∂loss/∂hidden (n, d) is kept for the backward."""
        compute = dtype or hidden.dtype
        w = weight.to(compute)
        b = None if bias is None else bias.to(compute)
        grad_hidden = torch.empty_like(hidden)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], rows):
                h, y = hidden[start : start + rows].to(compute), targets[start : start + rows]
                logits = F.linear(h, w, b).float()  # (rows, V)
                total += F.cross_entropy(logits, y, reduction="sum")
                grad = torch.softmax(logits, dim=-1)
                grad[torch.arange(y.shape[0], device=y.device), y] -= 1.0
                grad_hidden[start : start + rows] = (grad.to(compute) @ w).to(hidden.dtype)
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """∂L/∂hidden = grad_output · ∂loss/∂hidden; the head and targets get none."""
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_output.to(grad_hidden.dtype), None, None, None, None, None
