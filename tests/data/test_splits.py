"""The seeded splitters behind every carved validation/test split and train cap: stratified by
class (classification), grouped by question (generation), and the caps."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lorakit.data.splits import grouped_split, holdout_size, random_subset, stratified_split, stratified_subset


def imbalanced_labels() -> list[int]:
    # 600 / 300 / 90 / 9 / 1 rows: a dominant class down to a singleton.
    return [0] * 600 + [1] * 300 + [2] * 90 + [3] * 9 + [4]


def test_parts_cover_every_row_once_with_exact_sizes():
    labels = imbalanced_labels()
    rest, parts = stratified_split(labels, [100, 150], seed=0)
    assert [len(part) for part in parts] == [100, 150]
    everything = np.concatenate([rest, *parts])
    assert sorted(everything.tolist()) == list(range(len(labels)))
    for part in (rest, *parts):
        assert np.all(np.diff(part) > 0), "indices come in ascending row order"


@pytest.mark.parametrize("seed", [0, 1, 42, 1234])
def test_every_part_holds_each_class_in_proportion(seed):
    labels = np.array(imbalanced_labels())
    rest, parts = stratified_split(labels, [100, 100], seed=seed)
    totals = Counter(labels.tolist())
    for part in parts:
        counts = Counter(labels[part].tolist())
        for label, total in totals.items():
            expected = total * len(part) / len(labels)
            assert abs(counts.get(label, 0) - expected) <= 1, (label, counts, expected)
    # The singleton class stays in the remainder: train keeps every class.
    assert set(labels[rest].tolist()) == set(totals)


def test_same_seed_same_split_other_seed_other_split():
    labels = imbalanced_labels()
    first = stratified_split(labels, [100], seed=7)
    again = stratified_split(labels, [100], seed=7)
    other = stratified_split(labels, [100], seed=8)
    assert np.array_equal(first[1][0], again[1][0]) and np.array_equal(first[0], again[0])
    assert not np.array_equal(first[1][0], other[1][0])


def test_every_class_keeps_a_row_in_the_remainder():
    labels = [0, 0, 1, 1, 2, 2]
    rest, _ = stratified_split(labels, [3], seed=3)
    assert sorted(labels[i] for i in rest) == [0, 1, 2]
    with pytest.raises(ValueError):
        stratified_split(labels, [4], seed=3)


def test_holdout_size_rounds_and_is_never_zero():
    assert holdout_size(12752, 0.1) == 1275
    assert holdout_size(5, 0.1) == 1


def test_stratified_subset_keeps_every_class_in_proportion():
    labels = np.array(imbalanced_labels())
    kept = stratified_subset(labels, 100, seed=4)
    assert len(kept) == 100 and np.all(np.diff(kept) > 0)
    counts = Counter(labels[kept].tolist())
    assert set(counts) == set(labels.tolist()), "the singleton class is kept"
    assert abs(counts[0] - 60) <= 1 and abs(counts[1] - 30) <= 1


def test_grouped_split_fills_parts_exactly_with_single_questions():
    keys = ["big"] * 10 + [f"q{i}" for i in range(90)]
    for seed in range(5):
        rest, (validation, test) = grouped_split(keys, [10, 10], seed)
        assert (len(rest), len(validation), len(test)) == (80, 10, 10)
        assert sorted([*rest, *validation, *test]) == list(range(100))
        big = set(range(10))
        assert big <= set(rest) or big <= set(validation) or big <= set(test)


def test_random_subset_is_seeded_sorted_and_distinct():
    kept = random_subset(50, 7, seed=42)
    assert len(set(kept.tolist())) == 7 and np.all(np.diff(kept) > 0) and kept.max() < 50
    assert np.array_equal(kept, random_subset(50, 7, seed=42))
    assert not np.array_equal(kept, random_subset(50, 7, seed=43))
