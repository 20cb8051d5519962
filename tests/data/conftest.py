"""Data tests: never reach the Hugging Face Hub, and share a tiny offline tokenizer."""

import os
import string

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    """Offline mode even when huggingface_hub was imported (by an outer conftest) before the
    variable above was set: it reads HF_HUB_OFFLINE once, at import. A Hub name then fails at
    once instead of after ~20 s of network retries."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A BERT WordPiece tokenizer over single letters: a word of k letters is k tokens, so token
    counts follow text lengths. Built in memory, never downloaded."""
    from transformers import BertTokenizer

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase, *string.digits]
    tokens += [f"##{char}" for char in string.ascii_lowercase + string.digits]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)})
    tokenizer.model_max_length = 512
    return tokenizer
