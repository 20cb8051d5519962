"""`lorakit merge --adapter DIR --out MODEL_DIR`: fold an adapter into its base model for deployment.

Writes a standalone model folder (model.safetensors, config.json, tokenizer, lorakit.json) that
plain transformers loads, with no lorakit installed. --dtype auto keeps the base checkpoint's
dtype. A QLoRA adapter (trained on an NF4 base) is merged onto the NF4-dequantized weights it was
trained against, not onto the original ones.
"""

from __future__ import annotations

import argparse

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this command and its flags."""
    parser = subparsers.add_parser(
        "merge",
        help="merge an adapter into its base and save a standalone transformers model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--adapter", required=True, help="run folder or adapter folder")
    parser.add_argument("--out", required=True, help="the model folder to write (must not exist or be empty)")
    parser.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default="auto", help="weights' dtype (default auto: the base's own)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    from lorakit.export import merge_to_folder, summarize_model_folder
    from lorakit.report.humanize import format_bytes

    folder = merge_to_folder(args.adapter, args.out, dtype=args.dtype, overwrite=args.overwrite)
    summary = summarize_model_folder(folder)
    print(
        f"wrote {folder}: {summary.parameters:,} parameters, {'/'.join(summary.dtypes)}, "
        f"{format_bytes(summary.size_bytes)}"
    )
    print(f"  {', '.join(summary.files)}")
    if not any(name.startswith(("tokenizer", "vocab", "spiece")) for name in summary.files):
        print("  note: the base model has no tokenizer, so none was saved")
    return 0
