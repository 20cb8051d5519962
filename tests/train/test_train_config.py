"""TrainConfig and its config files: each field's type is checked, YAML reads numbers as people
write them, and a file that is no config is one line naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.errors import LorakitError
from lorakit.train.config import TrainConfig, read_config_file


def one_line_error(action, *words: str) -> str:
    with pytest.raises(LorakitError) as caught:
        action()
    message = str(caught.value)
    assert "\n" not in message and message.strip()
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def config_file(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def from_file(path: Path) -> TrainConfig:
    return TrainConfig.from_dict(read_config_file(path), source=str(path))


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"fsdp": "no"}, ["fsdp must be true or false, got 'no'"]),  # a truthy text once turned FSDP on
        ({"quiet": 1}, ["quiet must be true or false, got 1"]),
        ({"use_rslora": "false"}, ["use_rslora must be true or false"]),
        ({"epochs": float("inf")}, ["epochs must be a finite number, got inf"]),  # once an endless run
        ({"weight_decay": float("nan")}, ["weight_decay must be a finite number, got nan"]),  # once accepted
        ({"warmup_ratio": "0.1"}, ["warmup_ratio must be a number, got '0.1'"]),  # once a TypeError
        ({"max_grad_norm": "1"}, ["max_grad_norm must be a number or null, got '1'"]),
        ({"max_grad_norm": -1}, ["max_grad_norm must be >= 0"]),
        ({"batch_size": 16.0}, ["batch_size must be a whole number, got 16.0"]),
        ({"model": 7}, ["model must be a text or null, got 7"]),
        ({"prompt_column": None}, ["prompt_column must be a text, got None"]),
        ({"data": ["a.csv"] * 1_000}, ["data must be a text or null, got ['a.csv', 'a.csv', 'a.csv', 'a.csv', ...]"]),
        ({"seed": 2**32}, ["seed must be at most 2**32 - 1"]),  # once a ValueError from numpy at the first step
        ({"target_modules": {"q": 1}}, ["target_modules must be a list or a text or null"]),
    ],
)
def test_a_value_of_the_wrong_type_names_the_field(settings: dict, words: list[str]) -> None:
    one_line_error(lambda: TrainConfig.from_dict(settings), *words)


def test_yaml_reads_numbers_with_an_exponent_as_numbers(tmp_path: Path) -> None:
    """PyYAML follows YAML 1.1, where `5e-4` is a string: the learning rate everyone writes."""
    config = from_file(config_file(tmp_path, "lr: 5e-4\nlora_alpha: 1E1\nweight_decay: 0.0\ntext_column: 1e5x\n"))
    assert (config.lr, config.lora_alpha, config.weight_decay, config.text_column) == (5e-4, 10.0, 0.0, "1e5x")


def test_config_yaml_quotes_texts_that_read_as_numbers(tmp_path: Path) -> None:
    """What `--resume` reads back is what was saved: a column named "5e-4" stays a text."""
    config = TrainConfig(label_column="5e-4", text_column="1E3", lr=5e-4)
    config.save(tmp_path / "config.yaml")
    assert "label_column: '5e-4'" in (tmp_path / "config.yaml").read_text()
    assert from_file(tmp_path / "config.yaml") == config


def test_yaml_words_for_on_and_off_still_mean_the_choices(tmp_path: Path) -> None:
    config = from_file(config_file(tmp_path, "task: causal-lm\npacking: on\ngradient_checkpointing: off\n"))
    assert (config.packing, config.gradient_checkpointing) == ("on", "off")


def test_a_config_file_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_bytes("r: 4\n".encode("utf-8-sig"))
    assert from_file(path).r == 4


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("batch-size: 4\nbatch_size: 8\n", ["sets batch_size twice; keep one"]),
        ('"lr\\nmax": 1\n', ["unknown field(s) lr\\nmax"]),  # the line break escaped: the message is one line
        ("r: " + "[" * 3_000 + "]" * 3_000 + "\n", ["nests lists or mappings too deeply"]),  # once a RecursionError
        ("r: " + "9" * 5_000 + "\n", ["holds an integer of more than 4,300 digits"]),  # once a bare ValueError
        ("target_modules: &a [*a]\n", ["more than 10,000 values"]),  # a list that holds itself
        ("- r: 4\n", ["must hold a mapping of fields, got list"]),
        ("r: !!python/object:os.system ls\n", ["not valid YAML/JSON"]),
    ],
)
def test_a_file_that_is_no_config_is_one_line(tmp_path: Path, text: str, words: list[str]) -> None:
    one_line_error(lambda: from_file(config_file(tmp_path, text)), *words)


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """Nine levels of nine aliases: 387 million strings in an error message, were it printed (the old
    reader spent minutes building it): refused before any message shows a value."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = config_file(tmp_path, "\n".join(lines) + "\ntarget_modules: *a9\n")
    one_line_error(lambda: from_file(path), "more than 10,000 values", "YAML aliases")


def test_json_config_files_fail_like_json_data_files(tmp_path: Path) -> None:
    deep = config_file(tmp_path, '{"r": ' + "[" * 3_000 + "]" * 3_000 + "}", "run.json")
    one_line_error(lambda: from_file(deep), "not valid YAML/JSON", "nested too deeply")


def test_a_config_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_bytes("text_column: café\n".encode("latin-1"))
    one_line_error(lambda: read_config_file(path), "is not UTF-8 text (byte 0xe9 at position 16)", "re-save")


def test_a_folder_is_not_a_config_file(tmp_path: Path) -> None:
    one_line_error(lambda: read_config_file(tmp_path), f"config file {tmp_path} is a folder")
    one_line_error(lambda: read_config_file(tmp_path / "nope.yaml"), "does not exist")
