"""Generative user data: both row shapes in every format, split folders, `datasets` objects,
system prompts, question-grouped carving, the train cap."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from data_testing import write

from lorakit.data import GenerativeData, GenerativeExample, load_generative_data
from lorakit.data.generative import question_key


def pairs_frame(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {"prompt": [f"Question {i}?" for i in range(n)], "response": [f"Answer {i}." for i in range(n)]}
    )


def chat(*turns: str, system: str | None = None) -> list[dict[str, str]]:
    """OpenAI-style messages: turns alternate user, assistant."""
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": ("user", "assistant")[i % 2], "content": turn} for i, turn in enumerate(turns)]


def all_pairs(data: GenerativeData) -> list[tuple[str, str]]:
    return sorted(
        (example.messages[-2]["content"], example.response) for split in data.splits().values() for example in split
    )


def write_jsonl(path, records) -> str:
    write(path, "".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def test_example_prompt_and_response():
    example = GenerativeExample(chat("hi", "hello", "how are you?", "fine", system="be brief"))
    assert example.response == "fine"
    assert example.prompt_messages == example.messages[:-1]
    assert [message["role"] for message in example.prompt_messages] == ["system", "user", "assistant", "user"]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_prompt_response_files_of_every_format(tmp_path, suffix):
    frame = pairs_frame(40)
    path = tmp_path / f"data{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".json":
        frame.to_json(path, orient="records")
    else:
        frame.to_parquet(path)
    data = load_generative_data(str(path))
    assert (len(data.train), len(data.validation), len(data.test)) == (32, 4, 4)
    assert all_pairs(data) == sorted(zip(frame["prompt"], frame["response"], strict=True))
    assert all(
        example.messages[0] == {"role": "user", "content": example.messages[0]["content"]} for example in data.train
    )
    assert data.source == str(path)
    assert sum("carved from train" in note for note in data.notes) == 2


def test_other_column_names(tmp_path):
    frame = pairs_frame(20).rename(columns={"prompt": "instruction", "response": "output"})
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_generative_data(str(tmp_path / "d.csv"), prompt_column="instruction", response_column="output")
    assert len(data.train) + len(data.validation) + len(data.test) == 20


def test_openai_messages_jsonl_with_multi_turn_and_system(tmp_path):
    records = [{"messages": chat(f"q{i}", f"a{i}", f"follow-up {i}", f"more {i}", system="sys")} for i in range(20)]
    data = load_generative_data(write_jsonl(tmp_path / "chat.jsonl", records))
    example = next(e for split in data.splits().values() for e in split if e.messages[1]["content"] == "q3")
    assert example.messages == records[3]["messages"]
    assert example.response == "more 3"


def test_sharegpt_from_value_with_human_and_gpt_roles(tmp_path):
    records = [
        {
            "conversations": [
                {"from": "system", "value": "sys"},
                {"from": "human", "value": f"q{i}"},
                {"from": "gpt", "value": f"a{i}"},
            ]
        }
        for i in range(20)
    ]
    data = load_generative_data(write_jsonl(tmp_path / "sharegpt.jsonl", records), messages_column="conversations")
    example = next(e for split in data.splits().values() for e in split if e.response == "a7")
    assert example.messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q7"},
        {"role": "assistant", "content": "a7"},
    ]


def test_messages_in_parquet_and_as_json_text_in_csv(tmp_path):
    frame = pd.DataFrame({"messages": [chat(f"q{i}", f"a{i}") for i in range(20)]})
    frame.to_parquet(tmp_path / "chat.parquet")  # read back as numpy arrays of dicts
    frame.assign(messages=frame["messages"].map(json.dumps)).to_csv(tmp_path / "chat.csv", index=False)
    for name in ("chat.parquet", "chat.csv"):
        data = load_generative_data(str(tmp_path / name))
        assert sorted(e.response for split in data.splits().values() for e in split) == sorted(
            f"a{i}" for i in range(20)
        )
        assert all(isinstance(e.messages, list) and isinstance(e.messages[0], dict) for e in data.train)


def test_prompt_response_columns_win_over_messages(tmp_path):
    records = [{"prompt": f"p{i}", "response": f"r{i}", "messages": chat("x", "y")} for i in range(10)]
    data = load_generative_data(write_jsonl(tmp_path / "both.jsonl", records))
    assert {e.response for split in data.splits().values() for e in split} == {f"r{i}" for i in range(10)}


def test_system_prompt_is_added_where_none_is_given(tmp_path):
    records = [{"messages": chat(f"q{i}", f"a{i}", system="own" if i < 3 else None)} for i in range(20)]
    data = load_generative_data(write_jsonl(tmp_path / "chat.jsonl", records), system_prompt="Be kind.")
    systems = sorted(e.messages[0]["content"] for split in data.splits().values() for e in split)
    assert systems == ["Be kind."] * 17 + ["own"] * 3
    assert "3 examples keep their own system message instead of system_prompt" in data.notes


def test_a_split_folder_keeps_its_splits(tmp_path):
    frame = pairs_frame(30)
    frame[:20].to_csv(tmp_path / "train.csv", index=False)
    frame[20:25].to_json(tmp_path / "dev.jsonl", orient="records", lines=True)
    frame[25:].to_parquet(tmp_path / "test.parquet")
    data = load_generative_data(str(tmp_path))
    assert [e.response for e in data.validation] == [f"Answer {i}." for i in range(20, 25)]
    assert [e.response for e in data.test] == [f"Answer {i}." for i in range(25, 30)]
    assert len(data.train) == 20 and not any("carved" in note for note in data.notes)


def test_a_folder_without_test_carves_only_test(tmp_path):
    frame = pairs_frame(30)
    frame[:25].to_csv(tmp_path / "train.csv", index=False)
    frame[25:].to_csv(tmp_path / "validation.csv", index=False)
    data = load_generative_data(str(tmp_path))
    assert (len(data.train), len(data.validation), len(data.test)) == (23, 5, 2)  # round(2.5) == 2
    assert [note.split(":")[0] for note in data.notes if "carved" in note] == ["test"]


def test_held_out_questions_also_in_train_are_noted(tmp_path):
    frame = pairs_frame(20)
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame[:3].assign(response="another answer").to_csv(tmp_path / "test.csv", index=False)
    data = load_generative_data(str(tmp_path))
    assert "3 test examples share their first user message with train" in data.notes


def test_saved_dataset_dict_with_message_structs(tmp_path):
    from datasets import Dataset, DatasetDict

    def split(start, n):
        return Dataset.from_dict(
            {"messages": [chat(f"q{i}", f"a{i}") for i in range(start, start + n)], "id": list(range(n))}
        )

    DatasetDict(train=split(0, 20), validation=split(20, 4), extra=split(30, 2)).save_to_disk(tmp_path / "saved")
    data = load_generative_data(str(tmp_path / "saved"))
    assert [e.response for e in data.validation] == [f"a{i}" for i in range(20, 24)]
    assert data.validation[0].messages == chat("q20", "a20")
    assert (len(data.train), len(data.test)) == (18, 2)
    assert "ignored split 'extra' (not train, validation or test)" in data.notes


def test_hub_name_goes_through_load_dataset(monkeypatch):
    import datasets

    calls = []

    def load_dataset(name, config):
        calls.append((name, config))
        return datasets.DatasetDict(train=datasets.Dataset.from_pandas(pairs_frame(20)))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    data = load_generative_data("someone/instructions:en")
    assert calls == [("someone/instructions", "en")]
    assert data.source == "someone/instructions:en"
    assert (len(data.train), len(data.validation), len(data.test)) == (16, 2, 2)


def test_empty_rows_are_skipped_with_a_note(tmp_path):
    frame = pairs_frame(20)
    frame.loc[[2, 5], "prompt"] = " "
    frame.loc[7, "response"] = None
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    data = load_generative_data(str(tmp_path / "d.jsonl"))
    assert sum(len(split) for split in data.splits().values()) == 17
    assert "skipped 2 rows with an empty prompt (train 2)" in data.notes
    assert "skipped 1 row with an empty response (train 1)" in data.notes


def test_empty_messages_are_skipped_with_a_note(tmp_path):
    records = [{"messages": chat(f"q{i}", f"a{i}")} for i in range(12)]
    records[1]["messages"][1]["content"] = ""  # empty response
    records[2]["messages"][0]["content"] = None  # empty prompt
    records[3]["messages"] = []
    data = load_generative_data(write_jsonl(tmp_path / "chat.jsonl", records))
    assert sum(len(split) for split in data.splits().values()) == 9
    assert {
        "skipped 1 row with an empty prompt (train 1)",
        "skipped 1 row with an empty response (train 1)",
        "skipped 1 row with no messages (train 1)",
    } <= set(data.notes)


def test_carving_keeps_each_question_in_one_split(tmp_path):
    """The same question with different answers (and spelling) never lands in train and test."""
    prompts = [f"Question {i % 15}{'?' if i % 2 else ''}" for i in range(60)]
    frame = pd.DataFrame({"prompt": prompts, "response": [f"answer {i}" for i in range(60)]})
    frame.loc[::7, "prompt"] = frame.loc[::7, "prompt"].str.upper()
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = load_generative_data(str(tmp_path / "d.csv"), seed=3)
    questions = {name: {question_key(e) for e in split} for name, split in data.splits().items()}
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["test"]
    assert sum(len(split) for split in data.splits().values()) == 60


def test_splits_are_deterministic_per_seed(tmp_path):
    pairs_frame(50).to_csv(tmp_path / "d.csv", index=False)

    def responses(seed):
        data = load_generative_data(str(tmp_path / "d.csv"), seed=seed)
        return [[e.response for e in split] for split in data.splits().values()]

    assert responses(5) == responses(5)
    assert responses(5) != responses(6)


def test_max_train_examples_caps_train_only(tmp_path):
    pairs_frame(50).to_csv(tmp_path / "d.csv", index=False)
    data = load_generative_data(str(tmp_path / "d.csv"), max_train_examples=7)
    assert (len(data.train), len(data.validation), len(data.test)) == (7, 5, 5)
    assert "train capped at 7 of 40 examples (max_train_examples, seed 42)" in data.notes


def test_max_validation_examples_caps_validation_only(tmp_path):
    pairs_frame(50).to_csv(tmp_path / "d.csv", index=False)
    full = load_generative_data(str(tmp_path / "d.csv"))
    data = load_generative_data(str(tmp_path / "d.csv"), max_validation_examples=3)
    assert (len(data.train), len(data.validation), len(data.test)) == (40, 3, 5)
    assert data.train == full.train and data.test == full.test
    assert all(example in full.validation for example in data.validation)
    assert "validation capped at 3 of 5 examples (max_validation_examples, seed 42)" in data.notes
