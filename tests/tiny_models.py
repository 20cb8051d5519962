"""Tiny random transformers models (built from configs, never downloaded) and matching inputs.

Every factory seeds the RNG itself, so the same call always returns the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML chat template, as SmolLM2's, for word tokenizers that know <|im_start|> and <|im_end|>."""

VOCAB = 100
HIDDEN = 32
SEQ_LEN = 7
BATCH = 2


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config).eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=HIDDEN,
        n_layer=2,
        n_head=4,
        n_positions=64,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def tiny_t5(seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=VOCAB,
        d_model=HIDDEN,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    return T5ForConditionalGeneration(config).eval()


@dataclass(frozen=True)
class Arch:
    """One architecture under test: how to build it, what LoRA targets, how to feed it."""

    name: str
    build: Any
    targets: list[str]
    task_type: str
    auto_class: str  # the transformers Auto* class that reloads a merged model

    def inputs(self, seed: int = 1) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, VOCAB, (BATCH, SEQ_LEN), generator=generator)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.name == "t5":
            batch["decoder_input_ids"] = torch.randint(1, VOCAB, (BATCH, 5), generator=generator)
        return batch


ARCHS = {
    "bert": Arch("bert", tiny_bert, ["query", "value"], "SEQ_CLS", "AutoModelForSequenceClassification"),
    "llama": Arch("llama", tiny_llama, ["q_proj", "v_proj"], "CAUSAL_LM", "AutoModelForCausalLM"),
    "gpt2": Arch("gpt2", tiny_gpt2, ["c_attn"], "CAUSAL_LM", "AutoModelForCausalLM"),
    "t5": Arch("t5", tiny_t5, ["q", "v"], "SEQ_2_SEQ_LM", "AutoModelForSeq2SeqLM"),
}


def logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The model's logits on `batch` (no grad)."""
    with torch.no_grad():
        return model(**batch).logits


def word_tokenizer(vocab: dict[str, int], chat_template: str | None = None, **special_tokens: Any):
    """A fast, offline word-level tokenizer: whitespace-split words looked up in `vocab`, decoded
    joined by spaces. `special_tokens` are PreTrainedTokenizerFast's (unk_token, pad_token, ...)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab, unk_token=special_tokens.get("unk_token")))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens)
    tokenizer.chat_template = chat_template
    return tokenizer
