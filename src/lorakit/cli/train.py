"""`lorakit train`: fine-tune with LoRA, QLoRA or in full, and write a run folder.

With no arguments it trains the default: LoRA r=8, alpha=32 on query/value of the packaged
all-MiniLM-L6-v2, on the packaged rotten-tomatoes reviews, into runs/rotten-tomatoes-lora.
`--task causal-lm` instruction-tunes the packaged SmolLM2-135M-Instruct on the packaged
chatterbot Q&A; `--task seq2seq` trains a T5/BART-style --model on prompt → response pairs.
Settings come from the defaults, then --config FILE (YAML/JSON), then flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any

from lorakit.errors import LorakitError, PeerLostError
from lorakit.report.humanize import format_bytes, format_duration
from lorakit.task_kind import TaskKind
from lorakit.train.config import GROUPS, TrainConfig, read_config_file
from lorakit.train.run_dir import config_for_resume


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `lorakit train`: --config, --resume, and one flag per `TrainConfig` field."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune with LoRA (classification, causal LM, seq2seq) and write metrics, plots and a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags actually given override the config file
    )
    parser.add_argument("--config", help="YAML or JSON file of settings (flags override it)")
    parser.add_argument(
        "--resume", metavar="RUN_DIR", help="continue a run from its newest intact checkpoint (step 0 when it has none)"
    )
    add_config_arguments(parser)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `TrainConfig` field, in the field's group, generated from its declaration:
    `--field-name VALUE`; a boolean that defaults to False is `--field-name`, one that defaults to
    True is `--no-field-name`. Help texts show the default from the dataclass."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        meta, dashed = field.metadata, field.name.replace("_", "-")
        group = groups[meta["group"]]
        if hints[field.name] is bool:
            flag, action = (f"--no-{dashed}", "store_false") if field.default else (f"--{dashed}", "store_true")
            group.add_argument(flag, dest=field.name, action=action, help=_help(field))
            continue
        const = {"nargs": "?", "const": meta["flag_const"]} if meta.get("flag_const") else {}
        group.add_argument(
            f"--{dashed}", type=_value_type(hints[field.name]), choices=meta["choices"], help=_help(field), **const
        )


def _value_type(hint: Any) -> type:
    """The command-line type of a field: float or int where the field holds one, else text (the
    config parses the rest: task kinds, target specs)."""
    members = set(typing.get_args(hint) or (hint,))
    return float if float in members else int if int in members else str


def _help(field: dataclasses.Field) -> str:
    if field.default is True:
        return f"{field.metadata['help']}; on by default, this flag turns it off"
    shown = field.metadata["shown_default"]
    if shown is None and field.default is not None and field.default is not False:
        shown = f"{field.default:g}" if isinstance(field.default, float) else str(field.default)
    return f"{field.metadata['help']} (default {shown})" if shown else field.metadata["help"]


def validate_train_flags(flags: list[str]) -> TrainConfig:
    """The config `lorakit train FLAGS` would run, or the error it would give, without training."""
    parser = argparse.ArgumentParser(prog="lorakit train", add_help=False)
    add_parser(parser.add_subparsers(dest="command"))
    try:
        args = parser.parse_args(["train", *flags])
    except SystemExit:
        raise LorakitError(f"these flags are not valid for lorakit train: {' '.join(flags)}") from None
    return resolve_config(args)[0]


def resolve_config(args: argparse.Namespace) -> tuple[TrainConfig, bool]:
    """Defaults ← config file ← flags; with --resume the run's own saved config instead."""
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "config", "resume")}
    if getattr(args, "resume", None):
        config = config_for_resume(args.resume)
        if getattr(args, "quiet", False):
            config.quiet = True
        return config, True
    settings = read_config_file(args.config) if getattr(args, "config", None) else {}
    settings.update(flags)
    return TrainConfig.from_dict(settings, source=getattr(args, "config", None) or "flags"), False


def run(args: argparse.Namespace) -> int:
    """Train with the resolved config and print the summary."""
    config, resume = resolve_config(args)
    from lorakit.train.loop import train  # heavy imports only once the flags are valid

    try:
        result = train(config, resume=resume)
    except RuntimeError as error:
        if not peer_lost(error):
            raise
        raise PeerLostError(
            f"another process of this job stopped ({_first_line(error)}); the run folder keeps its last "
            f"checkpoint: launch the same job again with --resume {config.output_dir or 'RUN_DIR'}"
        ) from None
    if result.main_process:
        print_summary(result.run_dir, result.metrics)
    return 0


# What gloo and NCCL report when a process of the job is gone (killed, crashed, its machine down).
PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator was aborted")


def peer_lost(error: BaseException) -> bool:
    """Whether `error` is a collective failing because another process of a distributed job died."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and any(sign in str(error) for sign in PEER_LOST)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split("] ", 1)[-1][:160]  # gloo prefixes its source location


def print_summary(run_dir, metrics: dict) -> None:
    """The run's result in three lines, then where its folder and report are."""
    m = metrics
    if m["task"] == TaskKind.CLASSIFICATION:
        print(
            f"test accuracy {m['accuracy']:.4f} · macro-F1 {m['macro_f1']:.4f} · loss {m['loss']:.4f} "
            f"({m['test_examples']:,} examples, best epoch {m['best_epoch']})"
        )
    else:
        samples = ""
        if m.get("sample_f1_after") is not None:
            samples = f" · sample word-F1 {m['sample_f1_before']:.3f} → {m['sample_f1_after']:.3f}"
        print(
            f"test loss {m['loss']:.4f} · perplexity {m['perplexity']:.3f}{samples} "
            f"({m['test_examples']:,} examples, best epoch {m['best_epoch']})"
        )
    print(
        f"trainable params {m['trainable_params']:,} of {m['total_params']:,} ({m['trainable_percent']:.4f} %) · "
        f"{'adapter' if m['method'] == 'lora' else 'model'} {format_bytes(m['adapter_bytes'])} · "
        f"{format_duration(m['train_seconds'])} · {m['tokens_per_second']:,.0f} tok/s · "
        f"peak memory {format_bytes(m['peak_memory_bytes'])} · {m['device']} {m['precision']}"
    )
    if m.get("quantized_linear_bytes"):
        ratio = m["quantized_linear_bytes"] / m["fp32_bytes"]
        print(
            f"base linears {format_bytes(m['quantized_linear_bytes'])} in NF4 vs {format_bytes(m['fp32_bytes'])} fp32 "
            f"({ratio:.3f}×) and {format_bytes(m['bf16_bytes'])} bf16"
        )
    print(f"run folder: {run_dir}")
    print(f"report:     {run_dir / 'report.html'}")
    sys.stdout.flush()
