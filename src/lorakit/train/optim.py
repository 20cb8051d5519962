"""AdamW over the trainable parameters, with warmup and decay."""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_scheduler


def build_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; biases and normalisation weights get no weight decay (the usual BERT recipe)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def build_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, total_steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warmup over `warmup_ratio` of the steps, then linear/cosine decay to 0 (or constant)."""
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[kind]
    return get_scheduler(
        name, optimizer, num_warmup_steps=round(warmup_ratio * total_steps), num_training_steps=total_steps
    )
