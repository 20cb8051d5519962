"""`lorakit eval --adapter DIR --data DATA`: metrics of a trained classifier on labelled data.

By default a built-in dataset is scored on its test split and anything else (a file, a folder,
a datasets name) on all of its rows; --split picks one split instead. Labels are matched to the
adapter's label names by name: a label the adapter was not trained on is an error.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lorakit.errors import LorakitError

SPLITS = ("auto", "test", "validation", "train", "all")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--output", help="also write the metrics to this JSON file")


def run(args: argparse.Namespace) -> int:
    from lorakit.data import BUILTIN_DATASETS, ClassificationSplit, load_classification_data
    from lorakit.tasks.classification import classification_metrics, load_trained_classifier, predict_texts

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
    if args.output:
        Path(args.output).write_text(json.dumps(metrics, indent=2) + "\n")
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
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
