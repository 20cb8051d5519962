"""The swaps training makes to a model for speed, with the same results: dropout masks from a
faster generator on CPU (train/dropout.py) and matmul attention for short rows on CPU
(train/attention.py). The memory planner's probe models get the same swaps from here, so what it
measures is what the run keeps."""

from __future__ import annotations

from torch import nn

from lorakit.train.attention import use_training_attention
from lorakit.train.dropout import use_fast_dropout


def use_fast_paths(model: nn.Module, fast_dropout: bool) -> None:
    """Install training's fast paths on `model`; `fast_dropout` False keeps torch's dropout."""
    if fast_dropout:
        use_fast_dropout(model)
    use_training_attention(model, fast_dropout_masks=fast_dropout)
