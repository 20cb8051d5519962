"""One rule for what is missing in every task (None, NaN, pandas' NA, blank strings), and one
empty-row policy: such rows are skipped with a note or, with on_empty="fail", refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from data_testing import assert_one_line_error, sentiment_frame, write

from lorakit.data import load_classification_data, load_generative_data
from lorakit.data.cells import is_missing, is_missing_label, text_cell
from lorakit.data.policy import EmptyReason, apply_empty_policy


@pytest.mark.parametrize("value", [None, float("nan"), np.float32("nan"), pd.NA, "", " ", "\t\n"])
def test_missing_cells(value):
    assert is_missing(value)
    assert text_cell(value, "text", "d.csv", 1) is None


@pytest.mark.parametrize("value", ["0", "NA", "null", 0, 0.0, False, [], {}])
def test_present_cells(value):
    assert not is_missing(value)


def test_text_cells_keep_strings_and_spell_numbers():
    assert text_cell(" padded ", "text", "d.csv", 1) == " padded "
    assert text_cell(7, "text", "d.csv", 1) == "7"
    assert text_cell(np.float64(1.5), "text", "d.csv", 1) == "1.5"
    assert_one_line_error(lambda: text_cell(True, "text", "d.csv", 3), "'text'", "boolean values, not text", "row 3")


def test_blank_texts_and_labels_are_missing_in_classification(tmp_path):
    frame = sentiment_frame(30)
    frame.loc[[3, 8], "text"] = " \t "
    frame.loc[[5, 6], "label"] = "   "
    path = tmp_path / "data.jsonl"
    frame.to_json(path, orient="records", lines=True)
    data = load_classification_data(str(path))
    assert sum(len(split) for split in data.splits().values()) == 26
    assert "skipped 2 empty texts (train 2)" in data.notes
    assert_one_line_error(
        lambda: load_classification_data(str(path), on_empty="fail"), "4 unusable rows", "2 missing labels"
    )


def test_blank_prompts_are_missing_in_generation(tmp_path):
    frame = pd.DataFrame({"prompt": [f"q{i}" for i in range(20)], "response": [f"a{i}" for i in range(20)]})
    frame.loc[[1, 2], "prompt"] = "  "
    frame.loc[4, "response"] = "\n"
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_generative_data(str(tmp_path / "d.csv"))
    assert sum(len(split) for split in data.splits().values()) == 17
    assert "skipped 2 rows with an empty prompt (train 2)" in data.notes
    assert "skipped 1 row with an empty response (train 1)" in data.notes


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_blank_messages_cells_are_empty_conversations(tmp_path, suffix):
    """A blank messages cell (an empty CSV cell, a whitespace string) is a row without messages,
    not malformed JSON: skipped like any empty row, or counted when on_empty="fail"."""
    cells = [
        json.dumps([{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]) for i in range(20)
    ]
    cells[1], cells[6] = "", "   "
    frame = pd.DataFrame({"id": range(20), "messages": cells})  # a lone empty cell would be a blank line
    path = tmp_path / f"chat{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    else:  # JSON lines with the messages as a string
        write(path, "".join(json.dumps({"messages": cell}) + "\n" for cell in cells))
    data = load_generative_data(str(path))
    assert sum(len(split) for split in data.splits().values()) == 18
    assert "skipped 2 rows with no messages (train 2)" in data.notes
    assert_one_line_error(
        lambda: load_generative_data(str(path), on_empty="fail"),
        "2 unusable rows",
        "2 empty conversations in column 'messages' (first at row 2)",
    )


def test_the_policy_words_every_task_alike():
    reasons = [EmptyReason("empty text", "text", "empty text"), EmptyReason("empty prompt", "q", "row", " with x")]
    unusable = {"train": {"empty text": [2, 5], "empty prompt": [7]}, "test": {"empty text": [], "empty prompt": [1]}}
    origins = {"train": "train.csv", "test": "test.csv"}
    notes: list[str] = []
    apply_empty_policy(unusable, reasons, origins, "skip", notes)
    assert notes == ["skipped 2 empty texts (train 2)", "skipped 2 rows with x (train 1, test 1)"]
    assert_one_line_error(
        lambda: apply_empty_policy(unusable, reasons, origins, "fail", []),
        "4 unusable rows: train.csv has 2 empty texts in column 'text' (first at row 2), "
        "train.csv has 1 empty prompt in column 'q' (first at row 7), test.csv has 1 empty prompt",
        "on_empty='skip'",
    )
    clean = {"train": {"empty text": [], "empty prompt": []}}
    apply_empty_policy(clean, reasons, origins, "fail", notes)  # nothing unusable: nothing to refuse
    assert len(notes) == 2


def test_notes_count_in_words_that_agree(tmp_path):
    frame = sentiment_frame(40)
    frame.loc[[5, 6], "label"] = ""
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    data = load_classification_data(str(path), validation_fraction=0.1, test_fraction=0.025)
    assert "skipped 2 rows without a label (train 2)" in data.notes
    assert any(note.startswith("test: 1 row carved from train") for note in data.notes), data.notes


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_nan_labels_are_missing_not_a_class(tmp_path, suffix):
    """Integer labels with gaps: a CSV has "nan" where pandas wrote a missing number (na_rep, astype(str)),
    JSON lines and Parquet a NaN. Every form is a row without a label, never a class named "nan"."""
    frame = sentiment_frame(30, int_labels=True).astype({"label": float})
    frame.loc[[4, 9], "label"] = np.nan
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False, na_rep="nan")
        write(path, path.read_text().replace(",nan\n", ",NaN\n", 1))  # the case pandas' readers spell it in
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    data = load_classification_data(str(path))
    assert data.label_names == ["2", "7", "10"]
    assert "skipped 2 rows without a label (train 2)" in data.notes
    assert_one_line_error(lambda: load_classification_data(str(path), on_empty="fail"), "2 missing labels")


@pytest.mark.parametrize("value", ["nan", "NaN", " NAN "])
def test_nan_is_a_missing_label_but_a_text(value):
    assert is_missing_label(value) and not is_missing(value)
    assert text_cell(value, "text", "d.csv", 1) == value  # "nan" is a word (a grandmother), as a text
