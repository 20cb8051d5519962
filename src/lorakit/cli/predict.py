"""`lorakit predict --adapter DIR [TEXT ...]`: label and probability for each text.

Texts come from the arguments, else from --file (one per line; .jsonl: "text" and optional
"text_pair" fields), else from standard input, one per line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lorakit.cli.args import stdin_lines
from lorakit.data.readers import read_text_file
from lorakit.errors import LorakitError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this command and its flags."""
    parser = subparsers.add_parser(
        "predict",
        help="classify texts with a trained adapter",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--adapter", required=True, help="run folder, adapter folder or full-model folder")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="a text file (one per line) or JSONL file of texts")
    parser.add_argument("--json", action="store_true", help="one JSON object per line, with all probabilities")
    parser.add_argument("--batch-size", type=int, default=32)


def read_texts(args: argparse.Namespace) -> tuple[list[str], list[str] | None]:
    """The texts (and text pairs) to classify: arguments, else --file, else standard input."""
    if args.texts:
        return list(args.texts), None
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise LorakitError(f"--file {path} does not exist")
        lines = [line for line in read_text_file(path).splitlines() if line.strip()]
        if path.suffix in (".jsonl", ".json"):
            return _jsonl_texts(lines, path)
        return lines, None
    if sys.stdin.isatty():
        raise LorakitError("no texts: pass them as arguments, with --file, or on standard input")
    return stdin_lines(), None


def run(args: argparse.Namespace) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    if args.batch_size < 1:
        raise LorakitError(f"--batch-size must be at least 1, got {args.batch_size}")
    texts, pairs = read_texts(args)
    if not texts:
        raise LorakitError("no texts to classify (the input was empty)")
    from lorakit.inference.classification import load_trained_classifier, predict_texts

    classifier = load_trained_classifier(args.adapter)
    for text, result in zip(texts, predict_texts(classifier, texts, pairs, args.batch_size), strict=True):
        if args.json:
            print(json.dumps({"text": text, **result}, ensure_ascii=False))
        else:
            print(f"{result['label']}\t{result['probability']:.4f}\t{text}")
    return 0


def _jsonl_texts(lines: list[str], path: Path) -> tuple[list[str], list[str] | None]:
    texts, pairs = [], []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise LorakitError(f"{path} line {number} is not valid JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise LorakitError(f'{path} line {number} has no "text" string field')
        texts.append(row["text"])
        pairs.append(row.get("text_pair"))
    has_pairs = any(p is not None for p in pairs)
    if has_pairs and not all(isinstance(p, str) for p in pairs):
        raise LorakitError(f'{path}: "text_pair" must be on every line or on none')
    return texts, pairs if has_pairs else None
