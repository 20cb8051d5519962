"""Every bad generative input is one LorakitError line that names the problem and the fix."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from data_testing import assert_one_line_error, write

from lorakit.data.generative import load_generative_data


def load(path, **options):
    return lambda: load_generative_data(str(path), **options)


def jsonl(tmp_path, records, name="chat.jsonl"):
    return write(tmp_path / name, "".join(json.dumps(record) + "\n" for record in records))


def conversations(n=10):
    return [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(n)
    ]


# --- columns -----------------------------------------------------------------------------------


def test_missing_columns_list_what_is_there_and_the_flags(tmp_path):
    path = write(tmp_path / "d.csv", "question,answer\nhi,hello\n")
    assert_one_line_error(
        load(path),
        "d.csv",
        "no 'prompt' or 'response' column",
        "no 'messages' column",
        "columns present: ['question', 'answer']",
        "prompt_column=",
        "response_column=",
        "messages_column=",
    )


def test_only_the_missing_one_of_the_pair_is_named(tmp_path):
    path = write(tmp_path / "d.csv", "prompt,answer\nhi,hello\n")
    message = assert_one_line_error(load(path), "no 'response' column", "'answer'")
    assert "no 'prompt'" not in message


def test_a_tab_separated_csv_gets_a_hint(tmp_path):
    path = write(tmp_path / "d.csv", "prompt\tresponse\nhi\thello\n")
    assert_one_line_error(load(path), "tab-separated", ".tsv")


def test_split_files_of_different_shapes(tmp_path):
    write(tmp_path / "train.csv", "prompt,response\nhi,hello\n" * 3)
    jsonl(tmp_path, conversations(3), "test.jsonl")
    assert_one_line_error(load(tmp_path), "test.jsonl", "messages_column", "train.csv", "same columns")


def test_a_column_of_non_text_values(tmp_path):
    path = jsonl(tmp_path, [{"prompt": {"text": "hi"}, "response": "hello"}])
    assert_one_line_error(load(path), "'prompt'", "object values", "not text", "row 1")


# --- empty prompts and responses ---------------------------------------------------------------


def test_empty_prompts_and_responses_fail_with_counts_when_asked(tmp_path):
    frame = pd.DataFrame({"prompt": [f"p{i}" for i in range(10)], "response": [f"r{i}" for i in range(10)]})
    frame.loc[[3, 6], "prompt"] = ""
    frame.loc[8, "response"] = float("nan")
    frame.to_parquet(tmp_path / "d.parquet")
    assert_one_line_error(
        load(tmp_path / "d.parquet", on_empty="fail"),
        "3 unusable rows",
        "2 empty prompts in column 'prompt' (first at row 4)",
        "1 empty response in column 'response' (first at row 9)",
        "on_empty='skip'",
    )


def test_empty_message_contents_fail_when_asked(tmp_path):
    records = conversations(5)
    records[2]["messages"][1]["content"] = " "
    assert_one_line_error(
        load(jsonl(tmp_path, records), on_empty="fail"), "1 unusable row", "empty response", "'messages'", "row 3"
    )


def test_no_usable_examples(tmp_path):
    path = write(tmp_path / "d.csv", "prompt,response\n,hello\nhi,\n")
    assert_one_line_error(load(path), "d.csv", "no usable examples", "prompt_column", "response_column")


def test_too_few_questions_to_carve(tmp_path):
    path = write(tmp_path / "d.csv", "prompt,response\n" + "same question,an answer\n" * 12)
    assert_one_line_error(load(path), "1 distinct first user message", "12 examples", "validation and test", "files")


# --- malformed messages ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"role": "user"}, ["row 2", "holds an object, not a list of messages", "messages_column"]),
        (["hello"], ["row 2", "message 1 is a text", "'role' and 'content'"]),
        (
            [{"speaker": "user", "text": "hi"}],
            ["row 2", "message 1 has neither 'role' nor 'from'", "['speaker', 'text']"],
        ),
        ([{"role": "robot", "content": "hi"}], ["row 2", "message 1 has role 'robot'", "human", "gpt"]),
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ["a", "b"]}],
            ["row 2", "message 2's 'content' is a list, not text"],
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "user", "content": "again"},
                {"role": "assistant", "content": "x"},
            ],
            ["row 2", "message 2 is a user message where the assistant turn belongs", "alternate"],
        ),
        (
            [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "sys"},
                {"role": "assistant", "content": "x"},
            ],
            ["row 2", "message 2 is a system message", "first system message"],
        ),
    ],
)
def test_malformed_messages_name_the_row_and_the_problem(tmp_path, value, words):
    records = conversations(3)
    records[1]["messages"] = value
    assert_one_line_error(load(jsonl(tmp_path, records)), "chat.jsonl", *words)


def test_a_conversation_must_end_with_the_assistant(tmp_path):
    records = conversations(3)
    records[2]["messages"].append({"role": "user", "content": "and then?"})
    assert_one_line_error(load(jsonl(tmp_path, records)), "row 3", "ends with a user message", "assistant")


def test_messages_text_in_csv_must_be_json(tmp_path):
    path = write(tmp_path / "d.csv", 'messages\n"[{""role"": ""user""}"\n')
    assert_one_line_error(load(path), "row 1 of d.csv", "not a JSON list of messages", '"role"')


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        ("null", ["holds null, not a list of messages"]),
        ("7", ["holds a number, not a list of messages"]),
        ("[" * 3_000 + "]" * 3_000, ["not a JSON list of messages", "nested too deeply"]),
        ('[{"role": "user", "content": ' + "9" * 5_000 + "}]", ["not a JSON list of messages", "4,300 digits"]),
    ],
)
def test_messages_text_in_csv_that_is_json_but_no_list(tmp_path, cell, words):
    """JSON that is no list, nests deeper than Python's parser goes, or holds an integer too long
    to convert: one line naming the row, never a RecursionError or a bare ValueError."""
    path = tmp_path / "d.csv"
    pd.DataFrame({"id": [1], "messages": [cell]}).to_csv(path, index=False)
    assert_one_line_error(load(path), "row 1 of d.csv", *words)


# --- files, names and options ------------------------------------------------------------------


def test_a_file_that_is_not_what_its_extension_says(tmp_path):
    path = write(tmp_path / "d.parquet", "prompt,response\nhi,hello\n")
    assert_one_line_error(load(path), "d.parquet", "not a Parquet file", "rename")
    path = write(tmp_path / "d.jsonl", '{"prompt": "hi", "response": "hello"}\nnot json\n')
    assert_one_line_error(load(path), "d.jsonl line 2", "not valid JSON")


def test_missing_paths_and_unreachable_names():
    assert_one_line_error(lambda: load_generative_data("./nope.jsonl"), "no such file")
    message = assert_one_line_error(lambda: load_generative_data("chaterbot"), "neither a builtin", "Hub")
    assert "did you mean 'chatterbot'" in message


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"on_empty": "drop"}, ["on_empty", "'skip' or 'fail'"]),
        ({"seed": -1}, ["seed", "non-negative"]),
        ({"max_train_examples": 0}, ["max_train_examples", "positive"]),
        ({"prompt_column": "text", "response_column": "text"}, ["must differ", "'text'"]),
        ({"messages_column": ""}, ["messages_column", "non-empty"]),
        ({"system_prompt": "  "}, ["system_prompt", "non-empty"]),
    ],
)
def test_bad_options(tmp_path, options, words):
    path = jsonl(tmp_path, conversations())
    assert_one_line_error(load(path, **options), *words)


def test_the_builtin_has_fixed_columns():
    assert_one_line_error(
        lambda: load_generative_data("chatterbot", prompt_column="q"), "fixed columns", "prompt_column"
    )
