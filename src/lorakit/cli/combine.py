"""`lorakit combine A B [C ...] --weights 0.5,0.5 --out DIR`: one adapter from several.

The adapters (adapter or run folders) must share base model, task and label names. Methods:
  linear  A and B weighted by sqrt(weight · scaling) (PEFT's linear; needs equal ranks; approximate)
  svd     the exact weighted sum of the updates, cut to rank --svd-rank (default: the largest rank)
  cat     the exact weighted sum, at the sum of the ranks
Heads (a classifier) are averaged with the weights normalised to sum to 1. The result is an
adapter folder in the PEFT format that load_adapter, PEFT and `lorakit merge` read.
"""

from __future__ import annotations

import argparse

from lorakit.errors import LorakitError

METHOD_CHOICES = ("linear", "svd", "cat")


def weight_list(value: str) -> list[float]:
    """`0.5,0.5` → [0.5, 0.5], for argparse."""
    try:
        return [float(item) for item in value.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this command and its flags."""
    parser = subparsers.add_parser(
        "combine",
        help="combine adapters of one base model into a new adapter",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("adapters", nargs="+", help="two or more adapter or run folders")
    parser.add_argument(
        "--weights", type=weight_list, default=None, help="one weight per adapter, e.g. 0.5,0.5 (default: equal, sum 1)"
    )
    parser.add_argument("--method", choices=METHOD_CHOICES, default="linear", help="how to combine (default linear)")
    parser.add_argument("--svd-rank", type=int, default=None, help="rank of the result for --method svd")
    parser.add_argument("--out", required=True, help="the adapter folder to write (must not exist or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    if len(args.adapters) < 2:
        raise LorakitError("combine needs at least two adapters")
    weights = args.weights if args.weights is not None else [1 / len(args.adapters)] * len(args.adapters)
    if len(weights) != len(args.adapters):
        raise LorakitError(f"--weights has {len(weights)} values for {len(args.adapters)} adapters; give one each")
    if args.svd_rank is not None and args.method != "svd":
        raise LorakitError("--svd-rank only applies to --method svd")
    from lorakit.export import combine_adapter_folders
    from lorakit.lora import read_adapter

    folder = combine_adapter_folders(
        args.adapters, weights, args.out, method=args.method, svd_rank=args.svd_rank, overwrite=args.overwrite
    )
    config, tensors = read_adapter(folder)
    described = ", ".join(f"{w:g}·{path}" for w, path in zip(weights, args.adapters, strict=True))
    print(f"wrote {folder}: {args.method} combination of {described}")
    print(f"  rank {config.r}, {sum(t.numel() for t in tensors.values()):,} adapter parameters, {len(tensors)} tensors")
    return 0
