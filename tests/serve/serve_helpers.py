"""Tiny models, tokenizers and adapter folders for the serving tests (all built locally, seeded)."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertForSequenceClassification,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from lorakit.lora import LoraConfig, add_adapter, save_adapter
from lorakit.lora.layer import ModulesToSave
from lorakit.serve.engine.engine import Engine
from tiny_models import VOCAB, tiny_bert, tiny_llama

BASE_NAME = "tiny-base"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # ids 0..3; words are w4 .. w99


def tokenizer(classifier: bool, seq2seq: bool = False) -> PreTrainedTokenizerFast:
    """Whitespace word tokenizer over `w4 … w99` (ids 4..99, so `f"w{i}"` is token i).

    classifier: wrap inputs as [CLS] … [SEP] (BERT); seq2seq: end them with [SEP], the
    end-of-sequence token, as T5's tokenizer ends them with </s>; otherwise no special tokens are
    added and [SEP] is the end-of-sequence token (Llama).
    """
    vocab = {token: i for i, token in enumerate(SPECIALS)} | {f"w{i}": i for i in range(len(SPECIALS), VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if classifier:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
        )
    elif seq2seq:
        backend.post_processor = processors.TemplateProcessing(single="$A [SEP]", special_tokens=[("[SEP]", 3)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", eos_token="[SEP]", model_max_length=64
    )


def text(ids: list[int]) -> str:
    return " ".join(f"w{i}" for i in ids)


def add_random_adapter(
    model: nn.Module,
    name: str,
    r: int,
    task_type: str,
    targets: list[str],
    seed: int,
    lora_bias: bool = False,
) -> None:
    """An adapter with random A, B (not the no-op init) and a random copy of any head."""
    torch.manual_seed(seed)
    config = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=targets,
        task_type=task_type,
        init_lora_weights=False,
        lora_bias=lora_bias,
    )
    add_adapter(model, config, name)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ModulesToSave) and name in module.modules_to_save:
                for parameter in module.modules_to_save[name].parameters():
                    parameter.normal_()
    model.eval()


def bert_with_labels(num_labels: int) -> BertForSequenceClassification:
    """tiny_bert's encoder with a `num_labels`-way head."""
    base = tiny_bert()
    if num_labels == base.config.num_labels:
        return base
    config = copy.deepcopy(base.config)
    config.num_labels = num_labels
    model = BertForSequenceClassification(config).eval()
    model.bert.load_state_dict(base.bert.state_dict())
    return model


def write_classifier(folder: Path, r: int, num_labels: int, seed: int, info: dict | None = None) -> Path:
    """Save a SEQ_CLS adapter of tiny_bert (with a `num_labels`-way head) to `folder`, plus lorakit.json."""
    model = bert_with_labels(num_labels)
    add_random_adapter(model, "default", r, "SEQ_CLS", ["query", "value"], seed)
    save_adapter(model, folder)
    if info is not None:
        (folder / "lorakit.json").write_text(json.dumps(info))
    return folder


def write_generator(folder: Path, r: int, seed: int, targets: list[str] | None = None) -> Path:
    """Save a CAUSAL_LM adapter of tiny_llama to `folder`."""
    model = tiny_llama()
    add_random_adapter(model, "default", r, "CAUSAL_LM", targets or ["q_proj", "v_proj"], seed)
    save_adapter(model, folder)
    return folder


SEQ2SEQ_TARGETS = {"t5": ["q", "k", "v", "o"], "bart": ["q_proj", "k_proj", "v_proj", "out_proj"]}
"""Every attention projection: the encoder's, the decoder's and the cross-attention's."""


def tiny_seq2seq(arch: str) -> T5ForConditionalGeneration | BartForConditionalGeneration:
    """A 2+2-layer T5 (relative positions) or BART (learned absolute positions), hidden 32, vocabulary
    100 ([PAD] 0, [SEP] 3 ends a sequence), with weights wide enough that greedy text varies."""
    torch.manual_seed(0)
    if arch == "t5":
        config = T5Config(
            vocab_size=VOCAB,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            dropout_rate=0.0,
            initializer_factor=5.0,
            pad_token_id=0,
            eos_token_id=3,
            decoder_start_token_id=0,
        )
        return T5ForConditionalGeneration(config).eval()
    config = BartConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        init_std=0.5,
        dropout=0.0,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        decoder_start_token_id=3,
        forced_eos_token_id=None,
    )
    return BartForConditionalGeneration(config).eval()


def write_seq2seq_generator(folder: Path, r: int, seed: int) -> Path:
    """Save a SEQ_2_SEQ_LM adapter of tiny_seq2seq("t5") (every attention projection) to `folder`."""
    model = tiny_seq2seq("t5")
    add_random_adapter(model, "default", r, "SEQ_2_SEQ_LM", SEQ2SEQ_TARGETS["t5"], seed)
    save_adapter(model, folder)
    return folder


def slow_steps(engine: Engine, seconds: float) -> None:
    """Make every decoder step take at least `seconds` (a slow model): deadlines pass mid-run, and
    requests submitted one after the other arrive within a step."""
    decoder = engine.batcher.decoder
    step = decoder.step

    def slow_step() -> list:
        time.sleep(seconds)
        return step()

    decoder.step = slow_step


def run_to_end(decoder, arrivals: dict[int, list]) -> list[tuple[int, object]]:
    """Step `decoder` (a `Decoder` or `Seq2SeqDecoder`) until no row is left, admitting `arrivals[s]`
    before step s; (step, row) as rows finish."""
    finished, step = [], 0
    while decoder.size or any(s >= step for s in arrivals):
        finished += [(step, row) for row in decoder.admit(arrivals.get(step, []))]
        finished += [(step, row) for row in decoder.step()]
        step += 1
    return finished
