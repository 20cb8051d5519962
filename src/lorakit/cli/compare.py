"""`lorakit compare [TRAIN FLAGS]`: LoRA against full fine-tuning on the same data and budget.

Trains the same job twice, each in its own process (`--method lora`, then `--method full` with
--full-lr), and writes one table and chart: accuracy, trainable parameters, artifact size, time,
tokens/s and peak memory. Every flag it does not know goes to both `lorakit train` runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.folders import check_writable_folder


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this command and its flags."""
    parser = subparsers.add_parser(
        "compare",
        help="LoRA vs full fine-tuning on the same data and budget",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output-dir", help="folder for both runs and the table (default runs/compare-<data>)")
    parser.add_argument("--full-lr", type=float, default=5e-5, help="learning rate of the full run (default 5e-5)")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    from lorakit.cli.train import validate_train_flags
    from lorakit.train import experiments

    for flag in ("--method", "--output-dir", "--resume"):
        if flag in extra:
            raise LorakitError(f"compare chooses {flag} itself; leave it out")
    config = validate_train_flags(extra)
    folder = Path(args.output_dir or f"runs/compare-{Path(config.data).stem}")
    check_writable_folder(folder, "--output-dir")
    folder.mkdir(parents=True, exist_ok=True)
    lora = experiments.run_training([*extra, "--method", "lora"], folder / "lora")
    full_flags = [*extra, "--method", "full", "--lr", str(args.full_lr)]
    full = experiments.run_training(full_flags, folder / "full")
    rows = [experiments.table_row("LoRA", lora), experiments.table_row("full fine-tuning", full)]
    images = {
        "Accuracy and macro-F1": experiments.bars(rows, ["accuracy", "macro_f1"], folder / "accuracy.png"),
        "Accuracy vs trainable parameters": experiments.scatter(
            rows, "trainable_params", "accuracy", folder / "accuracy_vs_params.png"
        ),
    }
    report = experiments.write_summary(folder, "LoRA vs full fine-tuning", rows, experiments.TABLE_COLUMNS, images)
    print(experiments.markdown_table(rows, experiments.TABLE_COLUMNS))
    kept = lora["accuracy"] / full["accuracy"] if full["accuracy"] else float("nan")
    share = lora["trainable_params"] / full["trainable_params"]
    print(
        f"LoRA keeps {100 * kept:.1f} % of full fine-tuning's accuracy with {100 * share:.2f} % of its "
        f"trainable parameters and {lora['adapter_bytes'] / full['adapter_bytes']:.4f}x its artifact size."
    )
    print(f"report: {report}")
    return 0
