"""Turn split tables, as read from any source, into a checked `ClassificationData`.

Every loader (builtin, file, folder, `datasets` object) ends here, so the rules are the same for
all: required columns exist; empty texts and missing labels are skipped (with a note) or refused;
labels become indices; every validation/test label must occur in train; train needs two classes;
missing validation/test splits are carved from train with a seeded stratified split; train may be
capped; texts shared between train and a held-out split are noted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lorakit.data.options import LoadOptions
from lorakit.data.splits import holdout_size, stratified_split
from lorakit.data.types import ClassificationData, ClassificationSplit
from lorakit.errors import LorakitError

SPLITS = ("train", "validation", "test")
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# Why a row is unusable, in the order checked (a row counts once, for the first), and the words
# for notes about skipped rows.
_SKIPPED = {"empty text": "empty text", "empty text pair": "empty text pair", "missing label": "row without a label"}


@dataclass
class Table:
    """One split as read: its rows and what messages call it (a file name, a split of a folder)."""

    frame: pd.DataFrame
    origin: str


@dataclass
class _Rows:
    """One split's usable rows as parallel lists; `labels` still holds the raw values."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[object]


def assemble(
    tables: dict[str, Table],
    options: LoadOptions,
    source: str,
    label_order: list[str] | None = None,
    notes: list[str] | None = None,
) -> ClassificationData:
    """Check and convert split tables into train/validation/test of label indices.

    Args:
        tables: "train" (required), "validation", "test" → the table read for it.
        options: columns, empty-row policy, seed, carve fractions, train cap.
        source: what was loaded, kept for reports.
        label_order: the class names in index order when the source defines them (a builtin's
            fixed order, a `datasets` ClassLabel); labels are then matched by name. None: classes
            are read from the data, integers as sorted integers, anything else as sorted strings.
        notes: what the caller already did to the data; this function appends its own.

    Raises:
        LorakitError: one line naming the problem and the fix (see the module docstring).
    """
    notes = list(notes or [])
    tables = _without_unlabeled_splits(tables, options, notes)
    for table in tables.values():
        _check_columns(table, options)
    rows = _usable_rows(tables, options, notes)
    if label_order is None:
        label_names, labels = _infer_labels(rows, tables, options.label_column)
    else:
        label_names, labels = list(label_order), _match_labels(rows, tables, label_order)
    _check_classes(labels, tables, label_names, options)

    # Where each final split's rows come from: its own table, or train's for a carved split.
    indices = {split: np.arange(len(split_rows.texts)) for split, split_rows in rows.items()}
    origins = {split: split if split in rows else "train" for split in SPLITS}
    if options.carve_missing_splits:
        _carve_missing_splits(indices, labels["train"], tables["train"].origin, options, notes)
    else:
        for split in ("validation", "test"):
            indices.setdefault(split, np.array([], dtype=int))
    _cap_train(indices, labels["train"], options, notes)

    splits = {split: _take(rows[origins[split]], labels[origins[split]], indices[split]) for split in SPLITS}
    _note_overlap(splits, notes)
    return ClassificationData(
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        label_names=label_names,
        source=source,
        notes=notes,
    )


def _without_unlabeled_splits(tables: dict[str, Table], options: LoadOptions, notes: list[str]) -> dict[str, Table]:
    """Drop validation/test tables without a single label (Hub test sets often hide theirs as -1):
    they cannot measure anything, so those splits are carved from train instead."""
    kept = {}
    for split, table in tables.items():
        frame = table.frame
        if (
            split != "train"
            and options.label_column in frame.columns
            and len(frame)
            and all(_is_missing(value) for value in frame[options.label_column].tolist())
        ):
            notes.append(f"{split} ({table.origin}) has no labels; {split} carved from train instead")
            continue
        kept[split] = table
    return kept


def _check_columns(table: Table, options: LoadOptions) -> None:
    present = [str(column) for column in table.frame.columns]
    wanted = [("text_column", options.text_column), ("label_column", options.label_column)]
    if options.text_pair_column is not None:
        wanted.append(("text_pair_column", options.text_pair_column))
    for option, column in wanted:
        if column not in table.frame.columns:
            # A CSV that is really tab-separated reads as one column named "text\tlabel".
            hint = "; it looks tab-separated: name the file .tsv" if any("\t" in name for name in present) else ""
            raise LorakitError(
                f"{table.origin} has no column {column!r}; columns present: {present}; "
                f"pass {option}=<one of them>{hint}"
            )


def _usable_rows(tables: dict[str, Table], options: LoadOptions, notes: list[str]) -> dict[str, _Rows]:
    """Each split's rows minus those with an empty text, an empty pair or no label, which are
    dropped with a note (on_empty="skip") or refused (on_empty="fail")."""
    rows: dict[str, _Rows] = {}
    unusable: dict[str, dict[str, list[int]]] = {}
    for split, table in tables.items():
        texts = _texts(table, options.text_column)
        pairs = None if options.text_pair_column is None else _texts(table, options.text_pair_column)
        labels = table.frame[options.label_column].tolist()
        bad: dict[str, list[int]] = {reason: [] for reason in _SKIPPED}
        keep = []
        for i, text in enumerate(texts):
            if text is None:
                bad["empty text"].append(i + 1)
            elif pairs is not None and pairs[i] is None:
                bad["empty text pair"].append(i + 1)
            elif _is_missing(labels[i]):
                bad["missing label"].append(i + 1)
            else:
                keep.append(i)
        unusable[split] = bad
        rows[split] = _Rows(
            texts=[texts[i] for i in keep],
            pairs=None if pairs is None else [pairs[i] for i in keep],
            labels=[labels[i] for i in keep],
        )

    total = sum(len(found) for bad in unusable.values() for found in bad.values())
    if total and options.on_empty == "fail":
        raise LorakitError(
            f"{_plural(total, 'unusable row')}: {_describe_unusable(unusable, tables, options)}; "
            "fill them in or pass on_empty='skip' to drop them"
        )
    for reason, words in _SKIPPED.items():
        counts = {split: len(bad[reason]) for split, bad in unusable.items() if bad[reason]}
        if counts:
            where = ", ".join(f"{split} {count:,}" for split, count in counts.items())
            notes.append(f"skipped {_plural(sum(counts.values()), words)} ({where})")
    for split, table in tables.items():
        if not rows[split].texts:
            raise LorakitError(
                f"{table.origin} has no usable rows: every row has an empty text or no label; "
                f"check text_column ({options.text_column!r}) and label_column ({options.label_column!r})"
            )
    return rows


def _texts(table: Table, column: str) -> list[str | None]:
    """A column as texts: None where missing or blank, numbers as their digits, other types refused."""
    texts: list[str | None] = []
    for row, value in enumerate(table.frame[column].tolist(), 1):
        if isinstance(value, str):
            texts.append(value if value.strip() else None)
        elif _is_missing(value):
            texts.append(None)
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            texts.append(str(value))
        else:
            raise LorakitError(
                f"column {column!r} of {table.origin} holds {type(value).__name__} values, not text "
                f"(row {row}); pick a text column"
            )
    return texts


def _describe_unusable(
    unusable: dict[str, dict[str, list[int]]], tables: dict[str, Table], options: LoadOptions
) -> str:
    columns = {
        "empty text": options.text_column,
        "empty text pair": options.text_pair_column,
        "missing label": options.label_column,
    }
    return ", ".join(
        f"{tables[split].origin} has {_plural(len(found), reason)} in column {columns[reason]!r} "
        f"(first at row {found[0]})"
        for split, bad in unusable.items()
        for reason, found in bad.items()
        if found
    )


def _is_missing(value: object) -> bool:
    if isinstance(value, str):
        return not value.strip()
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _label_key(value: object, column: str, origin: str) -> int | float | str:
    """A raw label as an int when it is a whole number (1, 1.0, "1"), a float for other numbers,
    else its stripped string; booleans are names ("True"), not the integers 0 and 1."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, str):
        text = value.strip()
        if _INTEGER.fullmatch(text):
            return int(text)
        if _NUMBER.fullmatch(text):
            number = float(text)
            return int(number) if number.is_integer() else number
        return text
    raise LorakitError(
        f"column {column!r} of {origin} holds {type(value).__name__} values, not class labels; pick a label column"
    )


def _infer_labels(
    rows: dict[str, _Rows], tables: dict[str, Table], column: str
) -> tuple[list[str], dict[str, list[int]]]:
    """Classes read from the data: all whole numbers → sorted as numbers, named by their digits;
    otherwise sorted strings. Returns the names and each split's labels as indices into them."""
    keys = {
        split: [_label_key(value, column, tables[split].origin) for value in split_rows.labels]
        for split, split_rows in rows.items()
    }
    every = [key for split_keys in keys.values() for key in split_keys]
    numeric = all(isinstance(key, (int, float)) for key in every)
    if numeric and not all(isinstance(key, int) for key in every):
        example = next(key for key in every if isinstance(key, float))
        raise LorakitError(
            f"column {column!r} holds non-integer numbers such as {example}: that is a regression target, "
            "not class labels; pass label_column=<a column of class labels>"
        )
    if not numeric:
        keys = {split: [str(key) for key in split_keys] for split, split_keys in keys.items()}
    # Classes come from every split so that a held-out label missing from train has a name for
    # `_check_classes` to refuse it by.
    classes = sorted({key for split_keys in keys.values() for key in split_keys})
    index = {key: i for i, key in enumerate(classes)}
    encoded = {split: [index[key] for key in split_keys] for split, split_keys in keys.items()}
    return [str(key) for key in classes], encoded


def _match_labels(rows: dict[str, _Rows], tables: dict[str, Table], label_order: list[str]) -> dict[str, list[int]]:
    """Labels given by name against a fixed class list."""
    index = {name: i for i, name in enumerate(label_order)}
    encoded = {}
    for split, split_rows in rows.items():
        names = [str(value).strip() for value in split_rows.labels]
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise LorakitError(
                f"{tables[split].origin} has label {unknown[0]!r}, which is not one of the dataset's "
                f"classes {label_order}; fix the label"
            )
        encoded[split] = [index[name] for name in names]
    return encoded


def _check_classes(
    labels: dict[str, list[int]], tables: dict[str, Table], label_names: list[str], options: LoadOptions
) -> None:
    """Train needs two classes (unless allowed one, for data only evaluated), and every held-out
    label must be one that train teaches."""
    seen = set(labels["train"])
    if len(seen) < 2 and not options.allow_single_class:
        only = label_names[next(iter(seen))]
        raise LorakitError(
            f"{tables['train'].origin} has a single class ({only!r}) in column {options.label_column!r}; "
            "classification needs at least two: check label_column or the data"
        )
    for split, split_labels in labels.items():
        unseen = sorted(set(split_labels) - seen)
        if unseen:
            named = ", ".join(repr(label_names[i]) for i in unseen[:5]) + (", ..." if len(unseen) > 5 else "")
            raise LorakitError(
                f"label {named} in {split} ({tables[split].origin}) never occurs in train "
                f"({tables['train'].origin}); the model cannot learn a class it never sees: "
                "fix the label or add train examples of it"
            )


def _carve_missing_splits(
    indices: dict[str, np.ndarray], train_labels: list[int], train_origin: str, options: LoadOptions, notes: list[str]
) -> None:
    """Hold validation and/or test out of train, stratified by class, when the source lacks them."""
    missing = [split for split in ("validation", "test") if split not in indices]
    if not missing:
        return
    fractions = {"validation": options.validation_fraction, "test": options.test_fraction}
    n = len(indices["train"])
    sizes = [holdout_size(n, fractions[split]) for split in missing]
    classes = len(set(train_labels))
    if sum(sizes) > n - classes:
        raise LorakitError(
            f"{train_origin} has {_plural(n, 'usable row')}, too few to carve {' and '.join(missing)} from it "
            f"and keep all {classes} classes in train; add {'/'.join(missing)} files or more rows"
        )
    rest, parts = stratified_split(train_labels, sizes, options.seed)
    indices["train"] = rest
    for split, part in zip(missing, parts, strict=True):
        indices[split] = part
        notes.append(
            f"{split}: {len(part):,} rows carved from train ({fractions[split]:.0%}, stratified, seed {options.seed})"
        )


def _cap_train(indices: dict[str, np.ndarray], train_labels: list[int], options: LoadOptions, notes: list[str]) -> None:
    """Keep a stratified `max_train_examples` of train, after carving, so held-out splits stay whole."""
    cap = options.max_train_examples
    n = len(indices["train"])
    if cap is None or cap >= n:
        return
    labels = [train_labels[i] for i in indices["train"]]
    classes = len(set(labels))
    if cap < classes:
        raise LorakitError(f"max_train_examples={cap} is below the {classes} classes in train; pass at least {classes}")
    kept, _ = stratified_split(labels, [n - cap], options.seed)
    indices["train"] = indices["train"][kept]
    notes.append(f"train capped at {cap:,} of {n:,} rows (max_train_examples, stratified, seed {options.seed})")


def _take(rows: _Rows, labels: list[int], indices: np.ndarray) -> ClassificationSplit:
    return ClassificationSplit(
        texts=[rows.texts[i] for i in indices],
        labels=[labels[i] for i in indices],
        text_pairs=None if rows.pairs is None else [rows.pairs[i] for i in indices],
    )


def _note_overlap(splits: dict[str, ClassificationSplit], notes: list[str]) -> None:
    """Texts in both train and a held-out split inflate scores: say how many, hide nothing."""

    def examples(split: ClassificationSplit) -> list[tuple[str, str | None]]:
        return list(zip(split.texts, split.text_pairs or [None] * len(split), strict=True))

    train = set(examples(splits["train"]))
    for name in ("validation", "test"):
        shared = sum(example in train for example in examples(splits[name]))
        if shared:
            notes.append(f"{_plural(shared, f'{name} text')} also in train (possible leakage)")


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
