"""Counting parameters the way PEFT reports them."""

from __future__ import annotations

from torch import nn


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """`(trainable, total)` parameter counts; total includes the frozen originals of saved heads
    and the adapters, as PEFT's `get_nb_trainable_parameters` does."""
    trainable = total = 0
    for parameter in model.parameters():
        count = parameter.numel()
        total += count
        if parameter.requires_grad:
            trainable += count
    return trainable, total


def format_trainable_parameters(model: nn.Module) -> str:
    """PEFT's wording: `trainable params: 74,498 || all params: 22,788,484 || trainable%: 0.3269`."""
    trainable, total = trainable_parameters(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"
