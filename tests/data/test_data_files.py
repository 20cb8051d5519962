"""User data files of every supported format, split folders, and `datasets` save_to_disk folders."""

from __future__ import annotations

import json
from collections import Counter

import pandas as pd
import pytest
from data_testing import assert_one_line_error, sentiment_frame, write

from lorakit.data import BUILTIN_DATASETS, ClassificationData, load_classification_data


def all_examples(data: ClassificationData) -> list[tuple[str, str]]:
    """(text, label name) of every row in every split."""
    return [
        (text, data.label_names[label])
        for split in data.splits().values()
        for text, label in zip(split.texts, split.labels, strict=True)
    ]


def assert_carved(data: ClassificationData, rows: int) -> None:
    """Validation and test were carved from one file's rows: 10 % each, disjoint, complete."""
    held_out = round(0.1 * rows)
    assert (len(data.train), len(data.validation), len(data.test)) == (rows - 2 * held_out, held_out, held_out)
    texts = [text for split in data.splits().values() for text in split.texts]
    assert len(set(texts)) == rows
    assert any("carved from train" in note for note in data.notes)


def test_csv_with_string_labels(tmp_path):
    frame = sentiment_frame(40)
    path = tmp_path / "reviews.csv"
    frame.to_csv(path, index=False)
    data = load_classification_data(str(path))
    assert data.label_names == ["neg", "neutral", "pos"]  # sorted strings
    assert data.source == str(path)
    assert_carved(data, 40)
    assert sorted(all_examples(data)) == sorted(zip(frame["text"], frame["label"], strict=True))
    assert data.validation.text_pairs is None


def test_tsv_with_integer_labels_and_a_pair_column(tmp_path):
    frame = sentiment_frame(30, pairs=True, int_labels=True)
    path = tmp_path / "nli.tsv"
    frame.to_csv(path, sep="\t", index=False)
    data = load_classification_data(str(path), text_pair_column="hypothesis")
    assert data.label_names == ["2", "7", "10"]  # integers sort as numbers, named by their digits
    assert_carved(data, 30)
    expected = {(text, pair, str(label)) for text, pair, label in frame[["text", "hypothesis", "label"]].values}
    got = {
        (text, pair, data.label_names[label])
        for split in data.splits().values()
        for text, pair, label in zip(split.texts, split.text_pairs, split.labels, strict=True)
    }
    assert got == expected


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_json_lines(tmp_path, suffix):
    frame = sentiment_frame(20, int_labels=True)
    lines = [json.dumps(record) for record in frame.to_dict("records")]
    path = write(tmp_path / f"data{suffix}", "\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n")
    data = load_classification_data(str(path))
    assert data.label_names == ["2", "7", "10"]
    assert_carved(data, 20)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json"])
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_text_files_with_a_byte_order_mark(tmp_path, suffix, encoding):
    """UTF-8 with a byte-order mark (Excel's "CSV UTF-8", Notepad) and UTF-16 with one (Excel's
    "Unicode Text") read as UTF-8 does, in every text format."""
    frame = sentiment_frame(20)
    frame.loc[0, "text"] = "café ☕ naïve"
    if suffix in (".csv", ".tsv"):
        text = frame.to_csv(sep="\t" if suffix == ".tsv" else ",", index=False)
    else:
        text = frame.to_json(orient="records", lines=suffix == ".jsonl", force_ascii=False)
    path = write(tmp_path / f"data{suffix}", text.encode(encoding))
    data = load_classification_data(str(path))
    assert sorted(all_examples(data)) == sorted(zip(frame["text"], frame["label"], strict=True))


def test_a_label_of_more_digits_than_python_converts_is_a_class_name(tmp_path):
    """Past 4,300 digits int() refuses (a bare ValueError once escaped), and past float's range a
    number is infinite: such a label is a name, and the labels sort as names."""
    frame = sentiment_frame(30, int_labels=True).astype({"label": str})
    frame.loc[[0, 3, 6, 9], "label"] = "9" * 5_000
    frame.loc[[1, 4, 7, 10], "label"] = "1e999"
    frame.to_csv(tmp_path / "data.csv", index=False)
    data = load_classification_data(str(tmp_path / "data.csv"))
    assert data.label_names == ["10", "1e999", "2", "7", "9" * 5_000]


def test_json_lines_keep_unicode_line_separators_inside_strings(tmp_path):
    """JSON strings may hold U+2028, U+2029 and U+0085 as they are: they end no line of a .jsonl file."""
    frame = sentiment_frame(20)
    frame.loc[3, "text"] = "one\u2028two\u2029three\x85four"
    path = write(tmp_path / "data.jsonl", frame.to_json(orient="records", lines=True, force_ascii=False))
    data = load_classification_data(str(path))
    assert "one\u2028two\u2029three\x85four" in [text for text, _ in all_examples(data)]


def test_json_array_of_objects(tmp_path):
    frame = sentiment_frame(20)
    path = write(tmp_path / "data.json", json.dumps(frame.to_dict("records"), indent=2))
    data = load_classification_data(str(path))
    assert_carved(data, 20)


def test_parquet_with_pairs_and_custom_column_names(tmp_path):
    frame = sentiment_frame(20, pairs=True).rename(columns={"text": "premise", "label": "gold"})
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    data = load_classification_data(
        str(path), text_column="premise", label_column="gold", text_pair_column="hypothesis"
    )
    assert_carved(data, 20)
    assert all(pair.startswith("claim") for pair in data.train.text_pairs)


def test_folder_of_split_files_keeps_its_splits(tmp_path):
    frame = sentiment_frame(60)
    frame[:40].to_csv(tmp_path / "train.csv", index=False)
    lines = [json.dumps(record) for record in frame[40:50].to_dict("records")]
    write(tmp_path / "dev.jsonl", "\n".join(lines))
    frame[50:].to_parquet(tmp_path / "test.parquet")
    write(tmp_path / "README.md", "not data")
    data = load_classification_data(str(tmp_path))
    assert (len(data.train), len(data.validation), len(data.test)) == (40, 10, 10)
    assert data.test.texts == frame["text"][50:].tolist()
    assert [data.label_names[label] for label in data.test.labels] == frame["label"][50:].tolist()
    assert not any("carved" in note for note in data.notes)


def test_folder_without_test_carves_it_from_train(tmp_path):
    frame = sentiment_frame(50)
    frame[:40].to_csv(tmp_path / "train.csv", index=False)
    frame[40:].to_csv(tmp_path / "valid.csv", index=False)
    data = load_classification_data(str(tmp_path))
    assert (len(data.train), len(data.validation), len(data.test)) == (36, 10, 4)
    assert data.validation.texts == frame["text"][40:].tolist()
    assert any(note.startswith("test: 4 rows carved from train") for note in data.notes)


def test_texts_are_never_reinterpreted(tmp_path):
    path = write(tmp_path / "codes.csv", "text,label\n007,a\nNA,b\nnull,a\n1.50,b\n" + "x y,a\nz,b\n" * 3)
    data = load_classification_data(str(path))
    texts = {text for split in data.splits().values() for text in split.texts}
    assert {"007", "NA", "null", "1.50"} <= texts
    assert not any("skipped" in note for note in data.notes)


def test_empty_texts_are_skipped_with_a_note(tmp_path):
    frame = sentiment_frame(30)
    frame.loc[[3, 8], "text"] = "   "
    frame.loc[5, "label"] = ""
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    data = load_classification_data(str(path))
    assert sum(len(split) for split in data.splits().values()) == 27
    assert "skipped 2 empty texts (train 2)" in data.notes
    assert "skipped 1 row without a label (train 1)" in data.notes


def test_max_train_examples_caps_train_only(tmp_path):
    frame = sentiment_frame(100)
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    full = load_classification_data(str(path))
    capped = load_classification_data(str(path), max_train_examples=30)
    assert len(capped.train) == 30
    assert capped.validation == full.validation and capped.test == full.test
    assert set(capped.train.texts) <= set(full.train.texts)
    full_counts, capped_counts = Counter(full.train.labels), Counter(capped.train.labels)
    for label, count in full_counts.items():  # stratified: each class within one row of its share
        assert abs(capped_counts[label] - count * 30 / 80) <= 1
    assert "train capped at 30 of 80 rows (max_train_examples, stratified, seed 42)" in capped.notes


def test_max_validation_examples_caps_validation_only(tmp_path):
    path = tmp_path / "data.csv"
    sentiment_frame(200).to_csv(path, index=False)
    full = load_classification_data(str(path))
    capped = load_classification_data(str(path), max_validation_examples=9)
    assert len(capped.validation) == 9 and len(full.validation) == 20
    assert capped.train == full.train and capped.test == full.test
    assert set(capped.validation.texts) <= set(full.validation.texts)
    assert set(capped.validation.labels) == set(full.validation.labels)  # stratified: every class kept
    assert "validation capped at 9 of 20 rows (max_validation_examples, stratified, seed 42)" in capped.notes
    assert load_classification_data(str(path), max_validation_examples=9).validation == capped.validation
    assert load_classification_data(str(path), max_validation_examples=50).validation == full.validation


def test_seed_and_fractions_choose_the_carved_split(tmp_path):
    path = tmp_path / "data.csv"
    sentiment_frame(100).to_csv(path, index=False)
    first = load_classification_data(str(path), seed=1)
    assert load_classification_data(str(path), seed=1) == first
    assert load_classification_data(str(path), seed=2).validation.texts != first.validation.texts
    wide = load_classification_data(str(path), validation_fraction=0.2, test_fraction=0.3)
    assert (len(wide.train), len(wide.validation), len(wide.test)) == (50, 20, 30)


def test_texts_shared_between_splits_are_noted(tmp_path):
    frame = sentiment_frame(40)
    frame[:30].to_csv(tmp_path / "train.csv", index=False)
    pd.concat([frame[30:35], frame[:2]]).to_csv(tmp_path / "test.csv", index=False)
    data = load_classification_data(str(tmp_path))
    assert "2 test texts also in train (possible leakage)" in data.notes


# --- datasets objects --------------------------------------------------------------------------


def class_label_dataset(n: int, names: list[str], labels: list[int] | None = None):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"sentence": Value("string"), "label": ClassLabel(names=names)})
    labels = labels if labels is not None else [i % len(names) for i in range(n)]
    return Dataset.from_dict({"sentence": [f"sentence {i}" for i in range(n)], "label": labels}, features=features)


def test_saved_dataset_dict_keeps_class_label_names_and_carves_unlabeled_test(tmp_path):
    from datasets import DatasetDict

    names = ["negative", "positive", "mixed"]  # deliberately not sorted: ClassLabel order wins
    test = class_label_dataset(6, names, labels=[-1] * 6)  # GLUE-style hidden test labels
    data_dict = DatasetDict(
        train=class_label_dataset(60, names),
        validation=class_label_dataset(9, names),
        test=test,
        unsupervised=class_label_dataset(3, names),
    )
    data_dict.save_to_disk(tmp_path / "saved")
    data = load_classification_data(str(tmp_path / "saved"), text_column="sentence")
    assert data.label_names == names
    assert (len(data.train), len(data.validation), len(data.test)) == (54, 9, 6)
    assert [data.label_names[label] for label in data.validation.labels] == [names[i % 3] for i in range(9)]
    assert "ignored split 'unsupervised' (not train, validation or test)" in data.notes
    assert any("has no labels; test carved from train instead" in note for note in data.notes)


def test_saved_single_dataset_is_train(tmp_path):
    class_label_dataset(40, ["a", "b"]).save_to_disk(tmp_path / "one")
    data = load_classification_data(str(tmp_path / "one"), text_column="sentence")
    assert data.label_names == ["a", "b"]
    assert (len(data.train), len(data.validation), len(data.test)) == (32, 4, 4)


def test_saved_dataset_reports_missing_columns(tmp_path):
    class_label_dataset(10, ["a", "b"]).save_to_disk(tmp_path / "one")
    assert_one_line_error(lambda: load_classification_data(str(tmp_path / "one")), "'text'", "sentence", "text_column")


@pytest.mark.parametrize(
    ("file", "content"),
    [
        ("dataset_dict.json", "[]"),  # once a TypeError from inside datasets
        ("dataset_dict.json", "{}"),  # once a KeyError
        ("dataset_dict.json", '{"splits": 5}'),
        ("train/state.json", "[1]"),
        ("train/dataset_info.json", '{"features": 5}'),
    ],
)
def test_a_saved_dataset_with_damaged_metadata(tmp_path, file, content):
    from datasets import DatasetDict

    DatasetDict(train=class_label_dataset(10, ["a", "b"])).save_to_disk(tmp_path / "saved")
    (tmp_path / "saved" / file).write_text(content)
    assert_one_line_error(
        lambda: load_classification_data(str(tmp_path / "saved"), text_column="sentence"),
        "looks like a datasets save_to_disk folder but does not load",
        "damaged; re-save it with save_to_disk",
    )


# --- names that are neither builtin nor local --------------------------------------------------


def test_unknown_name_is_neither_builtin_file_nor_hub():
    message = assert_one_line_error(
        lambda: load_classification_data("rotten_tomatoes"), "neither a builtin", "file", "Hub", "rotten-tomatoes"
    )
    assert "did you mean 'rotten-tomatoes'" in message
    for name in BUILTIN_DATASETS:
        assert name in message


def test_a_missing_path_is_not_sent_to_the_hub(tmp_path):
    assert_one_line_error(lambda: load_classification_data(str(tmp_path / "nope.csv")), "no such file", "nope.csv")
    assert_one_line_error(lambda: load_classification_data("./data/nope"), "no such file")


def test_hub_name_with_a_config_goes_through_load_dataset(monkeypatch):
    """The Hub path, with `datasets.load_dataset` stood in for the network."""
    import datasets

    calls = []

    def load_dataset(name, config):
        calls.append((name, config))
        return datasets.DatasetDict(train=class_label_dataset(40, ["neg", "pos"]))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data = load_classification_data("nyu-mll/glue:sst2", text_column="sentence")
    assert calls == [("nyu-mll/glue", "sst2")]
    assert data.source == "nyu-mll/glue:sst2" and data.label_names == ["neg", "pos"]
    assert (len(data.train), len(data.validation), len(data.test)) == (32, 4, 4)
