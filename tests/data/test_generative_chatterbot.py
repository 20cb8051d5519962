"""The builtin `chatterbot` set: the corpus's odd entries handled and counted, documented sizes,
no question shared between splits, seeded splits."""

from __future__ import annotations

import importlib.util

import pytest
from data_testing import assert_one_line_error, write

from lorakit.data.chatterbot import read_conversations
from lorakit.data.generative import GENERATIVE_BUILTINS, load_generative_data, question_key


def test_odd_entries_are_skipped_trimmed_and_counted(tmp_path):
    first = write(
        tmp_path / "a.yml",
        """categories: [test]
conversations:
- - Hello
  - Hi there
- - Is it?
  - yes
- a bare string, not a conversation
- - Nested
  - [not, a, string]
- - "  Padded  "
  - ""
- - Only a question
- - One
  - Two
  - Three
""",
    )
    second = write(
        tmp_path / "b.yml", "categories: [test]\nconversations:\n- - Hello\n  - Hi there\n- - '3.0'\n  - 3.0\n"
    )
    conversations, notes = read_conversations([first, second])
    assert conversations == [
        [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"}],
        [{"role": "user", "content": "Is it?"}, {"role": "assistant", "content": "yes"}],  # not True
        [{"role": "user", "content": "One"}, {"role": "assistant", "content": "Two"}],
        [{"role": "user", "content": "3.0"}, {"role": "assistant", "content": "3.0"}],  # as written
    ]
    assert notes == [
        "skipped 2 entries that are not a list of strings",
        "skipped 1 entry with an empty turn",
        "dropped the final user turn of 2 entries",
        "skipped 1 entry with fewer than two turns",
        "dropped 1 repeated conversation",
    ]


def test_a_file_without_conversations_asks_for_a_reinstall(tmp_path):
    path = write(tmp_path / "a.yml", "categories: [test]\n")
    assert_one_line_error(lambda: read_conversations([path]), "a.yml", "no 'conversations' list", "--force-reinstall")


def test_a_missing_package_names_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(package, *args):
        return None if package == "chatterbot_corpus" else real_find_spec(package, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert_one_line_error(
        lambda: load_generative_data("chatterbot"), "not installed", "pip install --no-deps chatterbot-corpus==1.3.3"
    )


@pytest.mark.packaged
def test_chatterbot_sizes_and_clean_up():
    assert GENERATIVE_BUILTINS == ("chatterbot",)
    data = load_generative_data("chatterbot")
    assert (len(data.train), len(data.validation), len(data.test)) == (718, 90, 90)  # the module docstring's
    assert data.source == "chatterbot"
    assert data.notes[:3] == [
        "skipped 1 entry that is not a list of strings",
        "dropped the final user turn of 43 entries",
        "dropped 1,127 repeated conversations",
    ]
    examples = [example for split in data.splits().values() for example in split]
    assert len({tuple(tuple(m.values()) for m in example.messages) for example in examples}) == 898
    for example in examples:
        roles = [message["role"] for message in example.messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2)
        assert all(message["content"] == message["content"].strip() != "" for message in example.messages)
    assert sum(len(example.messages) > 2 for example in examples) == 68


@pytest.mark.packaged
@pytest.mark.parametrize("seed", [42, 7])
def test_chatterbot_questions_never_cross_splits(seed):
    data = load_generative_data("chatterbot", seed=seed)
    assert (len(data.train), len(data.validation), len(data.test)) == (718, 90, 90)
    questions = {name: {question_key(example) for example in split} for name, split in data.splits().items()}
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["test"]
    # "Tell me a joke" comes with 30 different jokes: all of them land in one split.
    jokes = {name for name, keys in questions.items() if "tell me a joke" in keys}
    assert len(jokes) == 1


@pytest.mark.packaged
def test_chatterbot_is_deterministic_per_seed_and_takes_options():
    def contents(**options):
        data = load_generative_data("chatterbot", **options)
        return [[example.messages for example in split] for split in data.splits().values()]

    assert contents(seed=1) == contents(seed=1)
    assert contents(seed=1) != contents(seed=2)
    data = load_generative_data("chatterbot", system_prompt="You are terse.", max_train_examples=50)
    assert len(data.train) == 50 and len(data.test) == 90
    assert all(example.messages[0] == {"role": "system", "content": "You are terse."} for example in data.train)
