"""`lorakit train`'s flags are generated from TrainConfig: one declaration per option."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from lorakit.cli.train import add_parser, validate_train_flags
from lorakit.errors import LorakitError
from lorakit.task_kind import TaskKind
from lorakit.train.config import TrainConfig


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorakit")
    add_parser(parser.add_subparsers(dest="command"))
    return parser


def help_text() -> str:
    parser = train_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices["train"].format_help()


def test_every_field_is_a_flag_with_its_help():
    text = help_text()
    for field in dataclasses.fields(TrainConfig):
        dashed = field.name.replace("_", "-")
        flag = f"--no-{dashed}" if field.default is True else f"--{dashed}"
        assert flag in text, flag
        assert field.metadata["help"].split()[0] in text


def test_help_shows_the_defaults_of_the_dataclass():
    text = " ".join(help_text().split())
    for shown in ("(default 8)", "(default 0.1)", "(default 16)", "(default 256)", "(default linear)", "(default 42)"):
        assert shown in text, shown
    assert "all-MiniLM-L6-v2 for classification, SmolLM2-135M-Instruct for causal-lm" in text
    assert "5e-4 for LoRA, 5e-5 for full" in text


def test_flags_reach_the_config_typed_and_normalised():
    config = validate_train_flags(
        [
            "--task",
            "causal-lm",
            "--r",
            "4",
            "--lora-alpha",
            "16",
            "--epochs",
            "0.5",
            "--target-modules",
            "q_proj,v_proj",
            "--max-grad-norm",
            "0",
            "--no-group-by-length",
            "--packing",
            "--max-train-examples",
            "7",
        ]
    )
    assert config.task is TaskKind.CAUSAL_LM and config.model == "SmolLM2-135M-Instruct" and config.data == "chatterbot"
    assert (config.r, config.lora_alpha, config.epochs) == (4, 16.0, 0.5)
    assert config.target_modules == ["q_proj", "v_proj"]
    assert config.max_grad_norm is None, "0 means no clipping"
    assert config.group_by_length is False and config.packing == "on" and config.max_train_examples == 7
    assert config.lr == 5e-4


def test_defaults_equal_the_dataclass_defaults():
    assert validate_train_flags([]) == TrainConfig()


def test_a_config_file_value_is_normalised_like_a_flag():
    assert TrainConfig(target_modules="query").target_modules == ["query"]
    assert TrainConfig(target_modules="all-linear").target_modules == "all-linear"
    assert TrainConfig(max_grad_norm=0).max_grad_norm is None


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--task", "regression"], ["not valid for lorakit train"]),
        (["--on-empty", "drop"], ["not valid for lorakit train"]),
        (["--max-train-examples", "0"], ["max_train_examples", "positive"]),
        (["--max-validation-examples", "0"], ["max_validation_examples", "positive"]),
        (["--text-column", "label"], ["different columns"]),
        (["--task", "seq2seq"], ["no packaged default model", "--model"]),
    ],
)
def test_bad_values_are_one_line_errors(flags, words):
    with pytest.raises(LorakitError) as caught:
        validate_train_flags(flags)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message
