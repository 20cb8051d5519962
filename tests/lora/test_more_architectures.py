"""RoBERTa, Qwen2 and BART (other named families): presets and outputs equal to PEFT's."""

from __future__ import annotations

import copy

import peft
import pytest
import torch
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
)

import lorakit


def tiny_roberta() -> RobertaForSequenceClassification:
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=70,
        num_labels=3,
    )
    return RobertaForSequenceClassification(config).eval()


def tiny_qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return Qwen2ForCausalLM(config).eval()


def tiny_bart() -> BartForConditionalGeneration:
    torch.manual_seed(0)
    config = BartConfig(
        vocab_size=100,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=64,
    )
    return BartForConditionalGeneration(config).eval()


@pytest.mark.parametrize(
    ("build", "task_type", "preset"),
    [
        (tiny_roberta, "SEQ_CLS", {"query", "value"}),
        (tiny_qwen2, "CAUSAL_LM", {"q_proj", "v_proj"}),
        (tiny_bart, "SEQ_2_SEQ_LM", {"q_proj", "v_proj"}),
    ],
    ids=["roberta", "qwen2", "bart"],
)
def test_preset_targets_and_outputs_equal_peft(build, task_type: str, preset: set[str]) -> None:
    base = build()
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    theirs = peft.get_peft_model(
        copy.deepcopy(base), peft.LoraConfig(r=4, task_type=task_type, init_lora_weights=False)
    )
    torch.manual_seed(5)
    ours = lorakit.add_adapter(
        copy.deepcopy(base), lorakit.LoraConfig(r=4, task_type=task_type, init_lora_weights=False)
    )
    adapted = {name.rsplit(".", 1)[-1] for name, m in ours.named_modules() if isinstance(m, lorakit.lora.LoraLinear)}
    assert adapted == preset
    with torch.no_grad():
        expected, actual = theirs(input_ids=ids).logits, ours(input_ids=ids).logits
    assert not torch.allclose(actual, base(input_ids=ids).logits)  # the adapter does something
    assert torch.allclose(actual, expected, atol=1e-6)
    assert lorakit.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
