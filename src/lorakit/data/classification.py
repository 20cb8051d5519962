"""Text classification: a source's split tables → a checked `ClassificationData`.

```python
from lorakit.data import load_classification_data
data = load_classification_data("rotten-tomatoes")          # or a file, a folder, a Hub name
data.train.texts[0], data.label_names[data.train.labels[0]]
```

Every source (builtin, file, folder, `datasets` object; read by `lorakit.data.sources`) ends in
`assemble`, so the rules are the same for all: required columns exist; empty texts and missing
labels are skipped (with a note) or refused (`lorakit.data.policy`); labels become indices
(`lorakit.data.labels`); every validation/test label must occur in train; train needs two classes;
missing validation/test splits are carved from train with a seeded stratified split
(`lorakit.data.splits`); train may be capped; texts shared between train and a held-out split are
noted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lorakit.data.builtin import BUILTIN_DATASETS, BUILTIN_READERS
from lorakit.data.cells import is_missing_label, text_cell
from lorakit.data.labels import infer_labels, match_labels
from lorakit.data.options import ClassificationOptions, resolve_options
from lorakit.data.policy import EmptyReason, UnusableRows, apply_empty_policy
from lorakit.data.sources import SPLITS, Source, Table, read_source, source_name
from lorakit.data.splits import holdout_size, stratified_split, stratified_subset
from lorakit.data.types import ClassificationData, ClassificationSplit
from lorakit.data.wording import plural
from lorakit.errors import LorakitError, option_name, option_setting


@dataclass
class _Rows:
    """One split's usable rows as parallel lists; `labels` still holds the raw values."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[object]


def load_classification_data(
    source: str,
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    on_empty: str = "skip",
    seed: int = 42,
    max_train_examples: int | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    allow_single_class: bool = False,
    carve_missing_splits: bool = True,
    *,
    max_validation_examples: int | None = None,
    options: ClassificationOptions | None = None,
) -> ClassificationData:
    """Load a text-classification dataset as train/validation/test splits of (text, label index).

    Args:
        source: a builtin name (`BUILTIN_DATASETS`); else a path: a .csv/.tsv/.jsonl/.json/.parquet
            file (all train), a folder of split files (`train.*`, `validation.*`/`valid.*`/
            `val.*`/`dev.*`, `test.*`), or a `datasets` save_to_disk folder; else a Hugging Face
            Hub dataset name (`name` or `name:config`), loaded with `datasets.load_dataset`.
        text_column, label_column: the columns holding the text and its class. Labels may be
            strings (classes: the sorted unique strings) or integers (the sorted integers, named
            by their digits); a `datasets` ClassLabel keeps its own names and order.
        text_pair_column: the second text of pair tasks (entailment, paraphrase), or None.
        on_empty: rows with an empty text or pair, or no label: "skip" drops them with a note,
            "fail" refuses the data.
        seed: seeds every split and cap; the same seed gives the same splits in any process.
        max_train_examples: keep a stratified sample of this many train rows (after carving).
        max_validation_examples: keep a stratified sample of this many validation rows (the test
            split stays whole).
        validation_fraction, test_fraction: the share of train carved out, stratified by class,
            for a split the source lacks.
        allow_single_class: accept data whose train holds one class, for data that is only
            evaluated (a file of positive examples); training needs two classes.
        carve_missing_splits: False leaves a split the source lacks empty instead of carving it
            from train, so a file that is only evaluated is scored on every row.
        options: all of the above as one `ClassificationOptions`, already validated; pass either
            it or the keywords above.

    Returns:
        `ClassificationData`: the splits, `label_names` (label i is `label_names[i]`), the
        source, and notes on what was dropped or carved.

    Raises:
        LorakitError: one line naming the problem (a missing column, empty texts, an unknown
            label, a malformed file, a single class, an unreachable name) and the fix.
        TypeError: `options` comes with a keyword changed from its default.
    """
    fields = {
        "text_column": text_column,
        "label_column": label_column,
        "text_pair_column": text_pair_column,
        "on_empty": on_empty,
        "seed": seed,
        "max_train_examples": max_train_examples,
        "max_validation_examples": max_validation_examples,
        "validation_fraction": validation_fraction,
        "test_fraction": test_fraction,
        "allow_single_class": allow_single_class,
        "carve_missing_splits": carve_missing_splits,
    }
    options = resolve_options(ClassificationOptions, options, fields)
    name = source_name(source)
    if name in BUILTIN_DATASETS:
        options.check_builtin_columns(name)
    return assemble(read_source(name, BUILTIN_READERS, [options.columns], options.label_column), options)


def assemble(source: Source, options: ClassificationOptions) -> ClassificationData:
    """Check and convert a source's split tables into train/validation/test of label indices.

    `source.label_names`, when set, are the classes in index order and labels are matched to
    them by name; else classes are read from the data (see `lorakit.data.labels`). The source's
    notes come first in the result's, then what this function did.

    Raises:
        LorakitError: one line naming the problem and the fix (see the module docstring).
    """
    notes = list(source.notes)
    tables = _without_unlabeled_splits(source.tables, options, notes)
    for table in tables.values():
        _check_columns(table, options)
    rows = _usable_rows(tables, options, notes)
    raw = {split: split_rows.labels for split, split_rows in rows.items()}
    origins = {split: table.origin for split, table in tables.items()}
    if source.label_names is None:
        label_names, labels = infer_labels(raw, origins, options.label_column)
    else:
        label_names, labels = list(source.label_names), match_labels(raw, origins, source.label_names)
    _check_classes(labels, origins, label_names, options)

    # Where each final split's rows come from: its own table, or train's for a carved split.
    indices = {split: np.arange(len(split_rows.texts)) for split, split_rows in rows.items()}
    taken_from = {split: split if split in rows else "train" for split in SPLITS}
    if options.carve_missing_splits:
        _carve_missing_splits(indices, labels["train"], origins["train"], options, notes)
    else:
        for split in ("validation", "test"):
            indices.setdefault(split, np.array([], dtype=int))
    _cap(indices, "train", labels["train"], options.max_train_examples, options.seed, notes)
    _cap(indices, "validation", labels[taken_from["validation"]], options.max_validation_examples, options.seed, notes)

    splits = {split: _take(rows[taken_from[split]], labels[taken_from[split]], indices[split]) for split in SPLITS}
    _note_overlap(splits, notes)
    return ClassificationData(**splits, label_names=label_names, source=source.name, notes=notes)


def _without_unlabeled_splits(
    tables: dict[str, Table], options: ClassificationOptions, notes: list[str]
) -> dict[str, Table]:
    """Drop validation/test tables without a single label (Hub test sets often hide theirs as -1):
    they cannot measure anything, so those splits are carved from train instead."""
    kept = {}
    for split, table in tables.items():
        frame = table.frame
        if (
            split != "train"
            and options.label_column in frame.columns
            and len(frame)
            and all(is_missing_label(value) for value in frame[options.label_column].tolist())
        ):
            notes.append(f"{split} ({table.origin}) has no labels; {split} carved from train instead")
            continue
        kept[split] = table
    return kept


def _check_columns(table: Table, options: ClassificationOptions) -> None:
    """Refuse a table without one of the columns the options name, listing those it has."""
    present = [str(column) for column in table.frame.columns]
    wanted = [("text_column", options.text_column), ("label_column", options.label_column)]
    if options.text_pair_column is not None:
        wanted.append(("text_pair_column", options.text_pair_column))
    for name, column in wanted:
        if column not in table.frame.columns:
            # A CSV that is really tab-separated reads as one column named "text\tlabel".
            hint = "; it looks tab-separated: name the file .tsv" if any("\t" in name for name in present) else ""
            raise LorakitError(
                f"{table.origin} has no column {column!r}; columns present: {present}; "
                f"pass {option_setting(name, '<one of them>')}{hint}"
            )


def _usable_rows(tables: dict[str, Table], options: ClassificationOptions, notes: list[str]) -> dict[str, _Rows]:
    """Each split's rows minus those with an empty text, an empty pair or no label, which are
    dropped with a note (on_empty="skip") or refused (on_empty="fail")."""
    reasons = [EmptyReason("empty text", options.text_column, "empty text")]
    if options.text_pair_column is not None:
        reasons.append(EmptyReason("empty text pair", options.text_pair_column, "empty text pair"))
    reasons.append(EmptyReason("missing label", options.label_column, "row", " without a label"))
    rows: dict[str, _Rows] = {}
    unusable: UnusableRows = {}
    for split, table in tables.items():
        texts = _texts(table, options.text_column)
        pairs = None if options.text_pair_column is None else _texts(table, options.text_pair_column)
        labels = table.frame[options.label_column].tolist()
        bad: dict[str, list[int]] = {reason.name: [] for reason in reasons}
        keep = []
        for i, text in enumerate(texts):
            if text is None:
                bad["empty text"].append(i + 1)
            elif pairs is not None and pairs[i] is None:
                bad["empty text pair"].append(i + 1)
            elif is_missing_label(labels[i]):
                bad["missing label"].append(i + 1)
            else:
                keep.append(i)
        unusable[split] = bad
        rows[split] = _Rows(
            texts=[texts[i] for i in keep],
            pairs=None if pairs is None else [pairs[i] for i in keep],
            labels=[labels[i] for i in keep],
        )
    apply_empty_policy(
        unusable, reasons, {split: table.origin for split, table in tables.items()}, options.on_empty, notes
    )
    for split, table in tables.items():
        if not rows[split].texts:
            raise LorakitError(
                f"{table.origin} has no usable rows: every row has an empty text or no label; "
                f"check {option_name('text_column')} ({options.text_column!r}) and {option_name('label_column')} "
                f"({options.label_column!r})"
            )
    return rows


def _texts(table: Table, column: str) -> list[str | None]:
    """A column as texts (see `text_cell`): None where missing."""
    return [text_cell(value, column, table.origin, row) for row, value in enumerate(table.frame[column].tolist(), 1)]


def _check_classes(
    labels: dict[str, list[int]], origins: dict[str, str], label_names: list[str], options: ClassificationOptions
) -> None:
    """Train needs two classes (unless allowed one, for data only evaluated), and every held-out
    label must be one that train teaches."""
    seen = set(labels["train"])
    if len(seen) < 2 and not options.allow_single_class:
        only = label_names[next(iter(seen))]
        raise LorakitError(
            f"{origins['train']} has a single class ({only!r}) in column {options.label_column!r}; "
            f"classification needs at least two: check {option_name('label_column')} or the data"
        )
    for split, split_labels in labels.items():
        unseen = sorted(set(split_labels) - seen)
        if unseen:
            named = ", ".join(repr(label_names[i]) for i in unseen[:5]) + (", ..." if len(unseen) > 5 else "")
            raise LorakitError(
                f"label {named} in {split} ({origins[split]}) never occurs in train "
                f"({origins['train']}); the model cannot learn a class it never sees: "
                "fix the label or add train examples of it"
            )


def _carve_missing_splits(
    indices: dict[str, np.ndarray],
    train_labels: list[int],
    train_origin: str,
    options: ClassificationOptions,
    notes: list[str],
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
            f"{train_origin} has {plural(n, 'usable row')}, too few to carve {' and '.join(missing)} from it "
            f"and keep all {classes} classes in train; add {'/'.join(missing)} files or more rows"
        )
    rest, parts = stratified_split(train_labels, sizes, options.seed)
    indices["train"] = rest
    for split, part in zip(missing, parts, strict=True):
        indices[split] = part
        notes.append(
            f"{split}: {plural(len(part), 'row')} carved from train "
            f"({fractions[split]:.0%}, stratified, seed {options.seed})"
        )


def _cap(
    indices: dict[str, np.ndarray], split: str, source_labels: list[int], cap: int | None, seed: int, notes: list[str]
) -> None:
    """Keep a stratified `cap` of `split` (train, or validation), after carving, so every class
    stays; `source_labels` are the labels of the table the split's indices point into."""
    n = len(indices[split])
    if cap is None or cap >= n:
        return
    labels = [source_labels[i] for i in indices[split]]
    classes = len(set(labels))
    name = f"max_{split}_examples"
    if cap < classes:
        raise LorakitError(
            f"{option_setting(name, cap)} is below the {classes} classes in {split}; pass at least {classes}"
        )
    indices[split] = indices[split][stratified_subset(labels, cap, seed)]
    notes.append(f"{split} capped at {cap:,} of {n:,} rows ({name}, stratified, seed {seed})")


def _take(rows: _Rows, labels: list[int], indices: np.ndarray) -> ClassificationSplit:
    """The split of the rows at `indices`."""
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
            notes.append(f"{plural(shared, f'{name} text')} also in train (possible leakage)")
