"""Training tests: a tiny BERT classifier folder and a small learnable dataset, built locally."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

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
