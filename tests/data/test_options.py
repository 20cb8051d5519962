"""Data options: validated once when built, shared fields checked by one base, passed to the
loaders whole or as keywords (never both)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from data_testing import assert_one_line_error, sentiment_frame

from lorakit.data import (
    ON_EMPTY_CHOICES,
    ClassificationOptions,
    DataOptions,
    GenerativeOptions,
    load_classification_data,
    load_generative_data,
)


@pytest.mark.parametrize("cls", [ClassificationOptions, GenerativeOptions])
@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("on_empty", "drop", ["on_empty", "'skip' or 'fail'", "'drop'"]),
        ("seed", -1, ["seed", "non-negative integer"]),
        ("seed", True, ["seed", "non-negative integer"]),
        ("max_train_examples", 0, ["max_train_examples", "positive integer or None"]),
        ("max_train_examples", 2.5, ["max_train_examples", "positive integer or None"]),
        ("max_validation_examples", 0, ["max_validation_examples", "positive integer or None"]),
        ("max_validation_examples", "8", ["max_validation_examples", "positive integer or None"]),
    ],
)
def test_shared_fields_are_validated_by_the_base_for_every_task(cls, field, value, words):
    assert issubclass(cls, DataOptions)
    assert_one_line_error(lambda: cls(**{field: value}), *words)


def test_on_empty_choices():
    assert ON_EMPTY_CHOICES == ("skip", "fail")
    for choice in ON_EMPTY_CHOICES:
        assert GenerativeOptions(on_empty=choice).on_empty == choice


def test_options_are_frozen_keyword_only_and_compare_by_value():
    options = ClassificationOptions(text_column="sentence", seed=7)
    assert options == ClassificationOptions(seed=7, text_column="sentence")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 8
    with pytest.raises(TypeError):
        ClassificationOptions("sentence")


@pytest.mark.parametrize(
    ("loader", "cls"), [(load_classification_data, ClassificationOptions), (load_generative_data, GenerativeOptions)]
)
def test_loader_keywords_are_the_options_fields_with_the_same_defaults(loader, cls):
    parameters = inspect.signature(loader).parameters
    fields = {field.name: field.default for field in dataclasses.fields(cls)}
    assert set(parameters) == {"source", "options", *fields}
    for name, default in fields.items():
        assert parameters[name].default == default, name
    assert parameters["options"].kind is inspect.Parameter.KEYWORD_ONLY


def test_a_classification_options_object_is_used_as_it_is(tmp_path):
    path = tmp_path / "data.csv"
    sentiment_frame(60).rename(columns={"text": "sentence"}).to_csv(path, index=False)
    options = ClassificationOptions(text_column="sentence", seed=3, max_train_examples=20)
    assert load_classification_data(str(path), options=options) == load_classification_data(
        str(path), text_column="sentence", seed=3, max_train_examples=20
    )


def test_a_generative_options_object_is_used_as_it_is(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"q": "question {i}?", "a": "answer {i}"}}\n' for i in range(30)))
    options = GenerativeOptions(prompt_column="q", response_column="a", system_prompt="Be brief.", seed=5)
    keywords = {"prompt_column": "q", "response_column": "a", "system_prompt": "Be brief.", "seed": 5}
    assert load_generative_data(str(path), options=options) == load_generative_data(str(path), **keywords)


def test_options_and_changed_keywords_together_are_a_type_error(tmp_path):
    path = tmp_path / "data.csv"
    sentiment_frame(20).to_csv(path, index=False)
    with pytest.raises(TypeError, match=r"not both.*seed"):
        load_classification_data(str(path), seed=1, options=ClassificationOptions())
    with pytest.raises(TypeError, match=r"not both.*system_prompt"):
        load_generative_data(str(path), system_prompt="hi", options=GenerativeOptions())


def test_options_of_the_other_task_are_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="ClassificationOptions"):
        load_classification_data(str(tmp_path), options=GenerativeOptions())
    with pytest.raises(TypeError, match="GenerativeOptions"):
        load_generative_data(str(tmp_path), options=ClassificationOptions())


@pytest.mark.parametrize(
    ("cls", "column", "words"),
    [
        (ClassificationOptions, {"label_column": "gold"}, "text_column, label_column and text_pair_column"),
        (GenerativeOptions, {"messages_column": "chat"}, "prompt_column, response_column and messages_column"),
    ],
)
def test_builtins_refuse_changed_columns(cls, column, words):
    cls().check_builtin_columns("any")  # defaults pass
    assert_one_line_error(lambda: cls(**column).check_builtin_columns("any"), "'any'", "fixed columns", words)
