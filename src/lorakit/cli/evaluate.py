"""`lorakit eval --adapter DIR --data DATA`: metrics of a trained adapter or model on data.

A classifier is scored on labelled texts (accuracy, macro-F1, per-class precision/recall); labels
are matched to the adapter's label names by name, and a label it was not trained on is an error.
A causal-lm or seq2seq generator is scored on prompt/response data (loss over response tokens
and perplexity). By default a built-in dataset is scored on its test split and anything else (a
file, a folder, a datasets name) on all of its rows; --split picks one split instead.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.folders import check_writable_file, write_text

SPLITS = ("auto", "test", "validation", "train", "all")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this command and its flags."""
    parser = subparsers.add_parser(
        "eval",
        help="score a trained adapter on labelled data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--adapter", required=True, help="run folder, adapter folder or full-model folder")
    parser.add_argument("--data", required=True, help="built-in dataset name, file, folder or datasets name")
    parser.add_argument("--split", choices=SPLITS, default="auto", help="which rows to score (default auto)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--text-pair-column", default=None)
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--prompt-column", default="prompt", help="generators: prompt column")
    parser.add_argument("--response-column", default="response", help="generators: response column")
    parser.add_argument("--messages-column", default="messages", help="generators: chat messages column")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--output", help="also write the metrics to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    from lorakit.artifacts import artifact_kind
    from lorakit.task_kind import TaskKind

    if args.batch_size < 1:
        raise LorakitError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.output:  # before minutes of scoring, not after
        check_writable_file(Path(args.output), "--output")
    if artifact_kind(Path(args.adapter)) is not TaskKind.CLASSIFICATION:
        return _run_generative(args)
    from lorakit.data import BUILTIN_DATASETS, ClassificationSplit, load_classification_data
    from lorakit.inference.classification import classification_metrics, load_trained_classifier, predict_texts

    classifier = load_trained_classifier(args.adapter)
    data = load_classification_data(
        args.data,
        text_column=args.text_column,
        label_column=args.label_column,
        text_pair_column=args.text_pair_column,
        allow_single_class=True,
        # A user's file is scored whole; only a built-in dataset has a fixed test split to keep.
        carve_missing_splits=args.data in BUILTIN_DATASETS,
    )
    split = args.split if args.split != "auto" else ("test" if args.data in BUILTIN_DATASETS else "all")
    parts = [data.train, data.validation, data.test] if split == "all" else [getattr(data, split)]
    if not any(len(part) for part in parts):
        raise LorakitError(f"{args.data} has no {split} split; pass --split all to score every row")
    rows = ClassificationSplit(
        texts=[t for p in parts for t in p.texts],
        labels=[data.label_names[y] for p in parts for y in p.labels],
        text_pairs=[t for p in parts for t in p.text_pairs] if data.train.text_pairs is not None else None,
    )
    unknown = sorted(set(rows.labels) - set(classifier.label_names))
    if unknown:
        raise LorakitError(
            f"label(s) {', '.join(map(repr, unknown[:5]))} in {args.data} were not in training; "
            f"the adapter knows {', '.join(map(repr, classifier.label_names))}"
        )
    if (rows.text_pairs is not None) != classifier.text_pair:
        needed = "needs --text-pair-column" if classifier.text_pair else "was trained on single texts"
        raise LorakitError(f"the adapter {needed}; the data does not match")
    results = predict_texts(classifier, rows.texts, rows.text_pairs, args.batch_size)
    index = {name: i for i, name in enumerate(classifier.label_names)}
    metrics = classification_metrics(
        [index[label] for label in rows.labels], [index[r["label"]] for r in results], classifier.label_names
    )
    metrics.update({"examples": len(rows.texts), "split": split, "dataset": data.source})
    _write(args, metrics)
    if not args.json:
        print(
            f"{data.source} ({split}, {len(rows.texts):,} examples): accuracy {metrics['accuracy']:.4f} · "
            f"macro-F1 {metrics['macro_f1']:.4f}"
        )
        width = max(len(name) for name in classifier.label_names)
        for name, scores in metrics["per_class"].items():
            print(
                f"  {name:<{width}}  precision {scores['precision']:.3f}  recall {scores['recall']:.3f}  "
                f"f1 {scores['f1']:.3f}  support {scores['support']}"
            )
    return 0


def _run_generative(args: argparse.Namespace) -> int:
    import torch

    from lorakit.artifacts import read_artifact_info
    from lorakit.data import GENERATIVE_BUILTINS, load_generative_data
    from lorakit.data.chat import CausalCollator, Seq2SeqCollator, tokenize_causal, tokenize_seq2seq
    from lorakit.inference.generation import load_trained_generator, perplexity, response_loss
    from lorakit.task_kind import TaskKind

    generator = load_trained_generator(args.adapter)
    info = read_artifact_info(generator.folder)
    data = load_generative_data(
        args.data,
        prompt_column=args.prompt_column,
        response_column=args.response_column,
        messages_column=args.messages_column,
        system_prompt=info.system_prompt,
    )
    split = args.split if args.split != "auto" else ("test" if args.data in GENERATIVE_BUILTINS else "all")
    examples = data.train + data.validation + data.test if split == "all" else getattr(data, split)
    if not examples:
        raise LorakitError(f"{args.data} has no {split} split; pass --split all to score every row")
    max_length = info.max_length or 256
    tokenizer, seq2seq = generator.tokenizer, generator.kind is TaskKind.SEQ2SEQ
    if seq2seq:
        target_length = info.max_target_length or 128
        rows = [tokenize_seq2seq(tokenizer, example, max_length, target_length) for example in examples]
        collate = Seq2SeqCollator(tokenizer, pad_to_multiple_of=8)
    else:
        rows = [row for example in examples if (row := tokenize_causal(tokenizer, example, max_length))]
        collate = CausalCollator(tokenizer, pad_to_multiple_of=8)
    if not rows:
        raise LorakitError(f"no example of {args.data} fits max_length={max_length}")
    with torch.no_grad():
        loss_sum, tokens = response_loss(generator.model, rows, collate, args.batch_size, shift_labels=not seq2seq)
    loss = loss_sum / max(tokens, 1)
    metrics = {
        "loss": loss,
        "perplexity": perplexity(loss),
        "examples": len(rows),
        "skipped_too_long": len(examples) - len(rows),
        "response_tokens": tokens,
        "split": split,
        "dataset": data.source,
    }
    _write(args, metrics)
    if not args.json:
        print(
            f"{data.source} ({split}, {len(rows):,} examples, {tokens:,} response tokens): "
            f"loss {loss:.4f} · perplexity {metrics['perplexity']:.3f}"
        )
    return 0


def _write(args: argparse.Namespace, metrics: dict) -> None:
    if args.output:
        write_text(Path(args.output), json.dumps(metrics, indent=2) + "\n")
    if args.json:
        print(json.dumps(metrics, indent=2))
