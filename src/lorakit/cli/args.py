"""Parsing helpers shared by the commands: LoRA options → `LoraConfig`."""

from __future__ import annotations

import argparse

from lorakit.lora.config import ALL_LINEAR

_REGEX_CHARACTERS = set("*()|[]^$\\+?")


def target_spec(value: str) -> list[str] | str:
    """`query,value` → a list; `all-linear` as is; anything with regex characters → a regex string."""
    value = value.strip()
    if value.lower() == ALL_LINEAR or _REGEX_CHARACTERS & set(value):
        return value
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one module, e.g. query,value")
    return names


def int_list(value: str) -> list[int]:
    try:
        return [int(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def add_lora_arguments(parser: argparse.ArgumentParser) -> None:
    """The LoRA options every command that builds an adapter shares (PEFT's names, dashed)."""
    group = parser.add_argument_group("LoRA")
    group.add_argument("--r", type=int, default=8, help="rank of the update (default 8)")
    group.add_argument("--lora-alpha", type=float, default=32, help="scaling numerator; scaling = alpha/r (default 32)")
    group.add_argument("--lora-dropout", type=float, default=0.1, help="dropout on the LoRA input (default 0.1)")
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
