"""Dropout with a faster random-number generator, for training on CPU.

Profiling a LoRA step of MiniLM on this CPU put `aten::bernoulli_` (dropout's mask) at ~26 % of
the step, even with dynamic padding: 32 dropout calls per step (embeddings, attention probs and
outputs in 6 layers, the 12 LoRA inputs, the classifier). NumPy's SFC64 generator draws 16-bit
integers about 5× faster than torch's CPU Bernoulli. `FastDropout` keeps an element when its
integer is ≥ round(p·2¹⁶): the same distribution up to p rounded to 1/65536, scaled by
1/(1-p) as usual; only the random stream differs from torch's.

Each mask's generator is seeded from torch's global generator, so `torch.manual_seed` makes runs
reproducible and a checkpoint that restores torch's RNG resumes the exact same masks. On CUDA,
torch's own Philox dropout is already fast and is used unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

_LEVELS = 1 << 16
ATTENTION_NAME = "lorakit_sdpa"


def keep_mask(shape: torch.Size, p: float) -> torch.Tensor:
    """A bool tensor of `shape`, each element True with probability 1 - p (p on a 1/65536 grid)."""
    seed = int(torch.randint(0, 2**62, (1,)).item())
    bits = np.random.Generator(np.random.SFC64(seed)).integers(0, _LEVELS, size=tuple(shape), dtype=np.uint16)
    return torch.from_numpy(bits >= round(p * _LEVELS))


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout(x, p, training)` with the mask drawn by `keep_mask` on CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    return x * keep_mask(x.shape, p).to(x.dtype).mul_(1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """`nn.Dropout` (same `p`, same train/eval behaviour) whose CPU mask comes from `keep_mask`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Dropout with the fast CPU mask while training; the identity in eval mode."""
        return fast_dropout(x, self.p, self.training)


def fast_dropout_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers attention: SDPA, except when training with attention dropout on CPU, where
    softmax(q·kᵀ·scale + mask)·v runs as plain matmuls with `fast_dropout` on the probabilities
    (SDPA's CPU dropout path is the same math, with torch's slow Bernoulli).

    query: (batch, heads, q_len, head_dim); returns (batch, q_len, heads, head_dim) like SDPA.
    """
    if dropout == 0.0 or not module.training or query.device.type != "cpu" or key.shape[1] != query.shape[1]:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scores = torch.matmul(query, key.transpose(2, 3)) * (scaling if scaling is not None else query.size(-1) ** -0.5)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probabilities = fast_dropout(F.softmax(scores, dim=-1), dropout, training=True)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION_NAME, fast_dropout_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every `nn.Dropout` in `model` (LoRA's included) for `FastDropout`, and SDPA attention
    for `fast_dropout_attention`; returns how many dropout modules were swapped."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p))
                swapped += 1
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(ATTENTION_NAME)
    return swapped
