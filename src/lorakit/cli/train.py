"""`lorakit train`: fine-tune with LoRA, QLoRA or in full, and write a run folder.

With no arguments it trains the default: LoRA r=8, alpha=32 on query/value of the packaged
all-MiniLM-L6-v2, on the packaged rotten-tomatoes reviews, into runs/rotten-tomatoes-lora.
`--task causal-lm` instruction-tunes the packaged SmolLM2-135M-Instruct on the packaged
chatterbot Q&A; `--task seq2seq` trains a T5/BART-style --model on prompt → response pairs.
Settings come from the defaults, then --config FILE (YAML/JSON), then flags.
"""

from __future__ import annotations

import argparse
import sys

from lorakit.cli.args import target_spec
from lorakit.errors import LorakitError
from lorakit.report.humanize import format_bytes, format_duration
from lorakit.train.config import METHODS, PRECISIONS, QUANTIZE, SCHEDULERS, TASKS, TrainConfig, read_config_file
from lorakit.train.run_dir import config_for_resume


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune with LoRA (classification, causal LM, seq2seq) and write metrics, plots and a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags actually given override the config file
    )
    parser.add_argument("--config", help="YAML or JSON file of settings (flags override it)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    what = parser.add_argument_group("data and model")
    what.add_argument("--task", choices=TASKS, help="what to train (default classification)")
    what.add_argument(
        "--model",
        help="packaged name, local folder or Hub id (default all-MiniLM-L6-v2; SmolLM2-135M-Instruct for causal-lm)",
    )
    what.add_argument(
        "--data",
        help="built-in dataset name, a file/folder, or a datasets name (default rotten-tomatoes; chatterbot for "
        "causal-lm and seq2seq)",
    )
    what.add_argument("--text-column", help="classification: column with the text (default text)")
    what.add_argument("--text-pair-column", help="classification: second text column, for pair tasks")
    what.add_argument("--label-column", help="classification: column with the label (default label)")
    what.add_argument("--prompt-column", help="generation: column with the prompt (default prompt)")
    what.add_argument("--response-column", help="generation: column with the response (default response)")
    what.add_argument("--messages-column", help="generation: column of chat messages (default messages)")
    what.add_argument("--system-prompt", help="generation: a system message put before every conversation")
    what.add_argument("--packing", action="store_true", help="causal-lm: pack short examples into full rows")
    what.add_argument("--max-target-length", type=int, help="seq2seq: truncate responses to this many tokens")
    what.add_argument("--on-empty", choices=("skip", "fail"), help="empty texts: skip them (default) or fail")
    what.add_argument("--max-train-examples", type=int, help="use only this many training examples")
    what.add_argument("--output-dir", help="the run folder (default runs/<data>-<method>)")
    method = parser.add_argument_group("method")
    method.add_argument("--method", choices=METHODS, help="lora (default) or full fine-tuning")
    method.add_argument("--r", type=int, help="LoRA rank (default 8)")
    method.add_argument("--lora-alpha", type=float, help="LoRA alpha; scaling = alpha/r (default 32)")
    method.add_argument("--lora-dropout", type=float, help="dropout on the LoRA input (default 0.1)")
    method.add_argument("--target-modules", type=target_spec, help="modules to adapt (default: query,value for BERT)")
    method.add_argument("--use-rslora", action="store_true", help="scale by alpha/sqrt(r)")
    method.add_argument("--quantize", choices=QUANTIZE, help="QLoRA: store the frozen base linears in 4-bit NF4")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=float, help="passes over the training data (default 3)")
    optim.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    optim.add_argument("--lr", type=float, help="peak learning rate (default 5e-4 for LoRA, 5e-5 for full)")
    optim.add_argument("--batch-size", type=int, help="examples per step and process (default 16)")
    optim.add_argument("--gradient-accumulation-steps", type=int, help="batches per optimizer step (default 1)")
    optim.add_argument("--max-length", type=int, help="truncate texts to this many tokens (default 256)")
    optim.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.01)")
    optim.add_argument("--warmup-ratio", type=float, help="share of steps for linear warmup (default 0.06)")
    optim.add_argument("--scheduler", choices=SCHEDULERS, help="decay after warmup (default linear)")
    optim.add_argument("--max-grad-norm", type=float, help="gradient clipping norm (default 1.0; 0 = off)")
    optim.add_argument("--precision", choices=PRECISIONS, help="auto (default: bf16 where fast), fp32, bf16, fp16")
    optim.add_argument(
        "--no-group-by-length",
        dest="group_by_length",
        action="store_false",
        help="random batches instead of length-grouped ones",
    )
    optim.add_argument(
        "--no-fast-dropout",
        dest="fast_dropout",
        action="store_false",
        help="use torch's own dropout masks instead of the faster generator",
    )
    optim.add_argument(
        "--no-first-token-only",
        dest="first_token_only",
        action="store_false",
        help="compute every position in the classifier's last layer, not only the [CLS] token its head reads",
    )
    optim.add_argument("--seed", type=int, help="seed for data order, initialisation and dropout (default 42)")
    run = parser.add_argument_group("evaluation and checkpoints")
    run.add_argument("--eval-steps", type=int, help="validate every N steps (default: every epoch)")
    run.add_argument("--early-stopping-patience", type=int, help="stop after N evaluations without improvement")
    run.add_argument("--checkpoint-steps", type=int, help="write a resumable checkpoint every N steps (default 200)")
    run.add_argument("--log-steps", type=int, help="record the training loss every N steps (default 10)")
    run.add_argument(
        "--generation-samples", type=int, help="generation: held-out prompts shown before/after in the report (8)"
    )
    run.add_argument("--max-new-tokens", type=int, help="generation: tokens generated per report sample (48)")
    run.add_argument("--quiet", action="store_true", help="no progress bar: log lines only")


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
    if settings.get("max_grad_norm") == 0:
        settings["max_grad_norm"] = None
    return TrainConfig.from_dict(settings, source=getattr(args, "config", None) or "flags"), False


def run(args: argparse.Namespace) -> int:
    config, resume = resolve_config(args)
    from lorakit.train.loop import train  # heavy imports only once the flags are valid

    result = train(config, resume=resume)
    if result.main_process:
        print_summary(result.run_dir, result.metrics)
    return 0


def print_summary(run_dir, metrics: dict) -> None:
    m = metrics
    if m["task"] == "classification":
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
