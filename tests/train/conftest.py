"""Training tests: a tiny BERT classifier folder and a small learnable dataset, built locally."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tiny_models import CHATML, word_tokenizer

POSITIVE = ["good", "great", "fine", "superb", "lovely", "fun"]
NEGATIVE = ["bad", "awful", "dull", "poor", "boring", "weak"]
NEUTRAL = ["the", "movie", "film", "was", "plot", "acting", "really", "quite", "a", "story"]


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT (hidden 32) with a word-level WordPiece tokenizer, saved as a folder."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *POSITIVE, *NEGATIVE, *NEUTRAL]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


def sentiment_rows(count: int, seed: int) -> list[tuple[str, str]]:
    """(text, label) pairs: a sentence of neutral words with one or two sentiment words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(NEUTRAL, 4) + rng.sample(POSITIVE if label == "pos" else NEGATIVE, rng.randint(1, 2))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    lines = ["review,sentiment"] + [f"{text},{label}" for text, label in sentiment_rows(320, seed=0)]
    path.write_text("\n".join(lines) + "\n")
    return path


COUNTRIES = {
    "france": "paris",
    "spain": "madrid",
    "italy": "rome",
    "japan": "tokyo",
    "peru": "lima",
    "chad": "ndjamena",
}
QA_WORDS = ["what", "is", "the", "capital", "of", "user", "assistant", "system", "answer", "briefly"]


def qa_tokenizer(chat_template: str | None):
    """A word-level tokenizer over the Q&A vocabulary, with ChatML special tokens."""
    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    words = [*QA_WORDS, *COUNTRIES, *COUNTRIES.values()]
    return word_tokenizer(
        {token: i for i, token in enumerate([*specials, *words])},
        chat_template,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )


@pytest.fixture(scope="session")
def tiny_causal_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama (hidden 128, so its linears can hold 4-bit NF4 blocks) with a ChatML
    word tokenizer, saved as a folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = qa_tokenizer(CHATML)
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer T5 (d_model 64) with the same word tokenizer, no chat template."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = qa_tokenizer(None)
    tokenizer.save_pretrained(folder)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1+1-layer BART (d_model 64) with the same word tokenizer, no chat template."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-bart")
    tokenizer = qa_tokenizer(None)
    tokenizer.save_pretrained(folder)
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    BartForConditionalGeneration(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def capitals_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prompt/response rows: "what is the capital of france" → "the capital of france is paris"."""
    import json

    rng = random.Random(0)
    rows = []
    for _ in range(240):
        country = rng.choice(list(COUNTRIES))
        prompt = rng.choice(["what is the capital of", "answer briefly what is the capital of"]) + f" {country}"
        rows.append({"prompt": prompt, "response": f"the capital of {country} is {COUNTRIES[country]}"})
    path = tmp_path_factory.mktemp("qa") / "capitals.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
