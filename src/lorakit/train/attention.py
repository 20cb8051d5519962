"""Attention for training on CPU: plain matmuls where they beat SDPA's CPU kernels.

    scores = q·kᵀ·scale + mask          (batch, heads, q_len, kv_len)
    out    = dropout(softmax(scores))·v  (batch, heads, q_len, head_dim)

SDPA's CPU flash kernel is built for long rows; on short ones its backward is slow. Measured here
(AVX-512 bf16, 2 threads, causal forward + backward, head_dim 64; benchmarks/attention_speed.py,
the full table in BENCHMARKS.md):

    batch × heads (kv heads) × length   SDPA     matmuls
    16 × 9 (3) × 64                      20 ms     4.5 ms
    16 × 32 (32) × 128                  154 ms    59 ms
    8 × 32 (32) × 256                   133 ms   228 ms
    2 × 9 (3) × 1024                     83 ms   232 ms

so rows up to `MATH_MAX_LENGTH` tokens take the matmuls, longer ones SDPA. The matmuls also take
attention dropout at any length: SDPA's CPU dropout draws with torch's slow Bernoulli, the
matmuls with `fast_dropout` (train/dropout.py) when the run asked for it.

The math is SDPA's, with the same `is_causal` rule (a missing mask means causal for decoder
attention): in fp32, outputs and gradients equal SDPA's (tested). In bf16 the scores are rounded
to bf16 before the softmax, as in transformers' eager attention (SDPA's kernel keeps them in
fp32), and the softmax runs in bf16 (its CPU kernel accumulates in fp32: equal to softmax in fp32
rounded after). Key and value heads shared by several query heads (GQA) are not repeated: the
query heads of one group are stacked along the length axis, so one matmul serves the group.
Anything SDPA adds (a cache longer than the rows, T5's position bias, softcapping, sinks) and
evaluation without gradients stay on SDPA.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from lorakit.train.dropout import fast_dropout

MATH_MAX_LENGTH = 192  # rows up to this long: the matmuls win at every shape measured above
_UNSUPPORTED = ("position_bias", "softcap", "s_aux")  # extras the matmul path does not model

Dropout = Callable[[torch.Tensor, float, bool], torch.Tensor]


def training_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    *,
    draw: Dropout = F.dropout,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention signature: SDPA, or `math_attention` while training on CPU.

    query: (batch, heads, q_len, head_dim); key, value: (batch, kv_heads, kv_len, head_dim);
    attention_mask: bool (True = attend) or additive, broadcastable to (batch, heads, q_len, kv_len).
    Returns (batch, q_len, heads, head_dim), as SDPA does."""
    if not _takes_math(module, query, key, dropout, kwargs):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = query.shape[2] > 1 and attention_mask is None and causal
    out = math_attention(query, key, value, attention_mask, causal, scaling, dropout, draw)
    return out.transpose(1, 2).contiguous(), None


def _takes_math(module: nn.Module, query: torch.Tensor, key: torch.Tensor, dropout: float, extras: dict) -> bool:
    """Training on CPU with gradients, rows attending to themselves (no cache), short rows or
    attention dropout, nothing SDPA-specific in `extras`."""
    return (
        query.device.type == "cpu"
        and module.training
        and torch.is_grad_enabled()
        and query.shape[2] == key.shape[2]
        and query.shape[1] % key.shape[1] == 0
        and (query.shape[2] <= MATH_MAX_LENGTH or dropout > 0.0)
        and all(extras.get(name) is None for name in _UNSUPPORTED)
    )


def math_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    causal: bool,
    scaling: float | None,
    dropout: float = 0.0,
    draw: Dropout = F.dropout,
) -> torch.Tensor:
    """softmax(q·kᵀ·scale + mask)·v as grouped matmuls; returns (batch, heads, q_len, head_dim).

    With g = heads / kv_heads query heads per key/value head, query is viewed as
    (batch, kv_heads, g·q_len, head_dim): heads h·g … h·g+g-1 (the ones `repeat_kv` would pair
    with kv head h) share one matmul with key h."""
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    scores = torch.matmul(query.reshape(batch, kv_heads, groups * q_len, dim), key.transpose(2, 3))
    scores = scores.view(batch, kv_heads, groups, q_len, kv_len) * scale
    if causal:
        mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril()
    if mask is not None:
        scores = _masked(scores, _grouped(mask, kv_heads, groups))
    probabilities = F.softmax(scores, dim=-1)
    if dropout > 0.0:
        probabilities = draw(probabilities, dropout, True)
    out = torch.matmul(probabilities.view(batch, kv_heads, groups * q_len, kv_len), value)
    return out.view(batch, heads, q_len, dim)


def _masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scores where a bool mask is False set to the dtype's minimum; an additive mask added."""
    if mask.dtype == torch.bool:
        return scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores + mask


def _grouped(mask: torch.Tensor, kv_heads: int, groups: int) -> torch.Tensor:
    """A mask of shape (q_len, kv_len) or (batch, 1 | heads, q_len, kv_len) broadcastable to
    (batch, kv_heads, groups, q_len, kv_len)."""
    if mask.dim() == 2 or mask.shape[1] == 1:
        return mask.unsqueeze(-3) if mask.dim() == 4 else mask
    return mask.reshape(mask.shape[0], kv_heads, groups, *mask.shape[2:])


ATTENTION_NAMES = {False: "lorakit_cpu", True: "lorakit_cpu_fast_dropout"}
for _fast, _name in ATTENTION_NAMES.items():
    AttentionInterface.register(_name, functools.partial(training_attention, draw=fast_dropout if _fast else F.dropout))
    ALL_MASK_ATTENTION_FUNCTIONS.register(_name, sdpa_mask)


def use_training_attention(model: nn.Module, fast_dropout_masks: bool) -> bool:
    """Switch a model that runs SDPA to `training_attention` (its attention dropout drawn by
    `fast_dropout` when `fast_dropout_masks`); False, changing nothing, for other implementations."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    model.set_attn_implementation(ATTENTION_NAMES[fast_dropout_masks])
    return True
