"""Tiny random Llamas whose widths NF4 can block (multiples of 64), and a fixed batch for them."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 100


def llama(hidden: int = 64, intermediate: int = 128, seed: int = 0, init_std: float = 0.1) -> LlamaForCausalLM:
    """`init_std` 0.02 (transformers' default, the scale of pretrained weights) caps a tiny model's
    logits near ±1, so no adapter could push its loss far below ln(vocab): training tests use 0.1."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        initializer_range=init_std,
    )
    return LlamaForCausalLM(config).eval()


def batch(size: int = 2, length: int = 12, seed: int = 1) -> dict[str, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (size, length), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
