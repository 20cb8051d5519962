"""Quantizing while loading gives exactly the model that loading and then quantizing gives."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from lorakit.quant import OUTPUT_HEADS, Nf4Linear, load_nf4, quantize_model
from lorakit.quant.nf4 import dequantize_nf4


def _nf4_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: dequantize_nf4(m.weight, torch.float32) for name, m in model.named_modules() if isinstance(m, Nf4Linear)
    }


def test_a_causal_lm_quantized_while_loading_equals_quantized_after(tmp_path: Path) -> None:
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path)
    streamed = load_nf4(lambda: AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32), OUTPUT_HEADS)
    after = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    quantize_model(after, "nf4")
    expected, got = _nf4_weights(after), _nf4_weights(streamed)
    assert got.keys() == expected.keys() and len(got) == 2 * 7
    for name, weight in expected.items():
        assert torch.equal(got[name], weight), name
    assert type(streamed.lm_head) is nn.Linear  # the head stays full precision
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(streamed(ids).logits, after(ids).logits)


def test_a_classifier_head_missing_from_the_checkpoint_stays_full_precision(tmp_path: Path) -> None:
    config = BertConfig(
        vocab_size=96, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path)  # a base checkpoint: no classifier weights in it

    def load() -> nn.Module:
        torch.manual_seed(3)  # the new head's initialisation
        return AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=3, dtype=torch.float32)

    streamed = load_nf4(load, OUTPUT_HEADS)
    after = load()
    quantize_model(after, "nf4")
    assert type(streamed.classifier) is nn.Linear
    assert torch.equal(streamed.classifier.weight, after.classifier.weight)
    assert _nf4_weights(streamed).keys() == _nf4_weights(after).keys()
    for name, weight in _nf4_weights(after).items():
        assert torch.equal(_nf4_weights(streamed)[name], weight), name
