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

_LEVELS = 1 << 16


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


def use_fast_dropout(model: nn.Module) -> int:
    """Swap every `nn.Dropout` in `model` (LoRA's included) for `FastDropout`; returns how many
    were swapped. Attention dropout is drawn inside attention (train/attention.py)."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p))
                swapped += 1
    return swapped
