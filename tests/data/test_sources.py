"""The shared source layer: a builtin, a file, a folder, a save_to_disk folder or a Hub name →
split tables, the same for every task; which columns matter is the task's choice."""

from __future__ import annotations

import pytest
from data_testing import assert_one_line_error, sentiment_frame, write

from lorakit.data.cells import is_missing
from lorakit.data.sources import Source, Table, read_source, source_name


def read(source, builtins=None, column_sets=(("text", "label"),), label_column=None) -> Source:
    return read_source(str(source), builtins or {}, column_sets, label_column)


def test_a_file_is_train(tmp_path):
    sentiment_frame(10).to_csv(tmp_path / "reviews.csv", index=False)
    source = read(tmp_path / "reviews.csv")
    assert source.name == str(tmp_path / "reviews.csv")
    assert list(source.tables) == ["train"] and source.tables["train"].origin == "reviews.csv"
    assert len(source.tables["train"].frame) == 10
    assert source.notes == [] and source.label_names is None


def test_a_folder_of_split_files_by_alias(tmp_path):
    frame = sentiment_frame(30)
    frame[:20].to_csv(tmp_path / "train.csv", index=False)
    frame[20:].to_json(tmp_path / "dev.jsonl", orient="records", lines=True)
    write(tmp_path / "notes.txt", "not a split")
    source = read(tmp_path)
    assert {split: table.origin for split, table in source.tables.items()} == {
        "train": "train.csv",
        "validation": "dev.jsonl",
    }


def test_datasets_splits_keep_the_first_complete_column_set(tmp_path):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"q": Value("string"), "a": Value("string"), "label": ClassLabel(names=["no", "yes"])})
    train = Dataset.from_dict({"q": ["x", "y"], "a": ["1", "2"], "label": [1, -1]}, features=features)
    DatasetDict(train=train, test=train.remove_columns("a"), extra=train).save_to_disk(tmp_path / "saved")
    source = read(tmp_path / "saved", column_sets=[["q", "a", "label"], ["q"]], label_column="label")
    assert list(source.tables["train"].frame.columns) == ["q", "a", "label"]
    labels = source.tables["train"].frame["label"].tolist()
    assert labels[0] == "yes" and is_missing(labels[1])  # ClassLabel names; -1 is missing
    assert list(source.tables["test"].frame.columns) == ["q"]
    assert source.tables["test"].origin == f"split 'test' of {tmp_path / 'saved'}"
    assert source.label_names == ["no", "yes"]
    assert source.notes == ["ignored split 'extra' (not train, validation or test)"]
    no_set = read(tmp_path / "saved", column_sets=[["prompt"]])
    assert no_set.tables["train"].frame.empty
    assert list(no_set.tables["train"].frame.columns) == ["q", "a", "label"]  # for the task's column check


def test_builtins_come_first_and_name_the_hub_error():
    builtin = Source("tiny", {"train": Table(sentiment_frame(4), "tiny")})
    assert read("tiny", builtins={"tiny": lambda: builtin}) is builtin
    message = assert_one_line_error(lambda: read("tiyn", builtins={"tiny": lambda: builtin}), "neither a builtin")
    assert "(tiny)" in message and "did you mean 'tiny'" in message


def test_a_missing_path_is_never_a_hub_name():
    for name in ("./nope", "~/nope", "nope.csv", "/no/such/folder"):
        assert_one_line_error(lambda name=name: read(name), "no such file or folder", name)


@pytest.mark.parametrize("source", [None, 3, "", "   "])
def test_a_source_is_a_non_blank_string_or_path(source):
    assert_one_line_error(lambda: source_name(source), "builtin dataset name, a path or a Hub name")
