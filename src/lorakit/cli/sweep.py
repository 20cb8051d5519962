"""`lorakit sweep --r 4,8,16,32 --lora-alpha 2r,4r --lora-dropout 0.05,0.1 [TRAIN FLAGS]`.

Trains every combination (each in its own process) and writes a table and a chart of accuracy
against trainable parameters. Alpha values may be numbers or multiples of r ("2r"). Runs that
already finished are reused, so an interrupted sweep continues where it stopped. Every flag it
does not know goes to each `lorakit train` run.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.folders import check_writable_folder


def number_list(value: str) -> list[str]:
    """`4,8,16` → the values as given, for argparse (parsed per flag later)."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("give at least one value, e.g. 4,8,16")
    return items


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this command and its flags."""
    parser = subparsers.add_parser(
        "sweep",
        help="grid of LoRA settings: accuracy vs trainable parameters",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--r", type=number_list, default=["4", "8", "16", "32"], help="ranks (default 4,8,16,32)")
    parser.add_argument("--lora-alpha", type=number_list, default=["2r"], help="alphas, e.g. 16,32 or 2r,4r")
    parser.add_argument("--lora-dropout", type=number_list, default=["0.1"], help="dropouts (default 0.1)")
    parser.add_argument("--output-dir", help="folder for the runs and the table (default runs/sweep-<data>)")


def resolve_alpha(alpha: str, r: int) -> float:
    """ "2r" → 2·r; "16" → 16."""
    try:
        return float(alpha[:-1] or 1) * r if alpha.endswith("r") else float(alpha)
    except ValueError:
        raise LorakitError(f"--lora-alpha value {alpha!r} is neither a number nor a multiple of r like 2r") from None


def run(args: argparse.Namespace, extra: list[str]) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    from lorakit.cli.train import validate_train_flags
    from lorakit.train import experiments

    for flag in ("--output-dir", "--resume", "--method"):
        if flag in extra:
            raise LorakitError(f"sweep chooses {flag} itself; leave it out")
    config = validate_train_flags(extra)
    try:
        ranks = [int(r) for r in args.r]
        dropouts = [float(d) for d in args.lora_dropout]
    except ValueError:
        raise LorakitError("--r takes integers and --lora-dropout numbers, comma-separated") from None
    grid = [(r, resolve_alpha(a, r), d) for r, a, d in itertools.product(ranks, args.lora_alpha, dropouts)]
    for r, alpha, dropout in grid:  # validate every combination before training any
        validate_train_flags([*extra, "--r", str(r), "--lora-alpha", str(alpha), "--lora-dropout", str(dropout)])
    folder = Path(args.output_dir or f"runs/sweep-{Path(config.data).stem}")
    check_writable_folder(folder, "--output-dir")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (r, alpha, dropout) in enumerate(grid, start=1):
        name = f"r{r}-a{alpha:g}-d{dropout:g}"
        print(f"[{index}/{len(grid)}] {name}", flush=True)
        flags = [*extra, "--r", str(r), "--lora-alpha", str(alpha), "--lora-dropout", str(dropout)]
        metrics = experiments.run_training(flags, folder / name)
        rows.append(experiments.table_row(name, metrics, r=r, lora_alpha=alpha, lora_dropout=dropout))
    rows.sort(key=lambda row: -row["accuracy"])
    columns = ["name", "r", "lora_alpha", "lora_dropout", *experiments.TABLE_COLUMNS[1:]]
    images = {
        "Accuracy vs trainable parameters": experiments.scatter(
            rows, "trainable_params", "accuracy", folder / "accuracy_vs_params.png"
        )
    }
    report = experiments.write_summary(folder, "LoRA parameter sweep", rows, columns, images)
    print(experiments.markdown_table(rows, columns))
    print(f"report: {report}")
    return 0
