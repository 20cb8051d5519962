"""Parsing helpers shared by the commands: LoRA options → `LoraConfig`, lines of standard input."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from lorakit.errors import LorakitError
from lorakit.lora.config import parse_target_spec
from lorakit.train.config import TrainConfig

TRAIN_DEFAULTS = {field.name: field.default for field in dataclasses.fields(TrainConfig)}


def target_spec(value: str) -> list[str] | str:
    """`parse_target_spec` for argparse: `query,value` → a list; `all-linear`; a regex."""
    try:
        return parse_target_spec(value)
    except LorakitError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def int_list(value: str) -> list[int]:
    """`0,1,2` → [0, 1, 2], for argparse."""
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def add_lora_arguments(parser: argparse.ArgumentParser) -> None:
    """The LoRA options every command that builds an adapter shares (PEFT's names, dashed), with
    `lorakit train`'s defaults."""
    r, alpha, dropout = (TRAIN_DEFAULTS[name] for name in ("r", "lora_alpha", "lora_dropout"))
    group = parser.add_argument_group("LoRA")
    group.add_argument("--r", type=int, default=r, help=f"rank of the update (default {r})")
    group.add_argument(
        "--lora-alpha", type=float, default=alpha, help=f"scaling numerator; scaling = alpha/r (default {alpha})"
    )
    group.add_argument(
        "--lora-dropout", type=float, default=dropout, help=f"dropout on the LoRA input (default {dropout})"
    )
    group.add_argument(
        "--target-modules",
        type=target_spec,
        default=None,
        help="comma-separated module names (exact or dotted suffix), a regex, or all-linear; "
        "default: the architecture's attention preset (query,value for BERT)",
    )
    group.add_argument("--exclude-modules", type=target_spec, default=None, help="modules never targeted")
    group.add_argument(
        "--layers-to-transform", type=int_list, default=None, help="only these layer indices, e.g. 0,1,2"
    )
    group.add_argument("--use-rslora", action="store_true", help="scale by alpha/sqrt(r) (rank-stabilised LoRA)")
    group.add_argument("--bias", choices=("none", "all", "lora_only"), default="none", help="which biases train")


def stdin_lines() -> list[str]:
    """The non-blank lines of standard input.

    Raises:
        LorakitError: the input is not text in the terminal's encoding (UTF-8 as a rule).
    """
    try:
        text = sys.stdin.read()
    except UnicodeDecodeError as error:
        raise LorakitError(
            f"standard input is not {error.encoding} text (undecodable byte at position {error.start}); "
            f"re-encode it as {error.encoding}"
        ) from None
    return [line for line in text.splitlines() if line.strip()]
