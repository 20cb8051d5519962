"""One entry point for classification data: a builtin name, then a path, then a Hub dataset."""

from __future__ import annotations

from pathlib import Path

from lorakit.data.builtin import BUILTIN_DATASETS, load_builtin
from lorakit.data.files import load_path
from lorakit.data.hf import load_hub_dataset
from lorakit.data.options import LoadOptions
from lorakit.data.readers import SUPPORTED_EXTENSIONS
from lorakit.data.types import ClassificationData
from lorakit.errors import LorakitError


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
        validation_fraction, test_fraction: the share of train carved out, stratified by class,
            for a split the source lacks.
        allow_single_class: accept data whose train holds one class, for data that is only
            evaluated (a file of positive examples); training needs two classes.
        carve_missing_splits: False leaves a split the source lacks empty instead of carving it
            from train, so a file that is only evaluated is scored on every row.

    Returns:
        `ClassificationData`: the splits, `label_names` (label i is `label_names[i]`), the
        source, and notes on what was dropped or carved.

    Raises:
        LorakitError: one line naming the problem (a missing column, empty texts, an unknown
            label, a malformed file, a single class, an unreachable name) and the fix.
    """
    options = LoadOptions(
        text_column=text_column,
        label_column=label_column,
        text_pair_column=text_pair_column,
        on_empty=on_empty,
        seed=seed,
        max_train_examples=max_train_examples,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        allow_single_class=allow_single_class,
        carve_missing_splits=carve_missing_splits,
    )
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise LorakitError(f"source must be a builtin dataset name, a path or a Hub name, got {source!r}")
    source = str(source)
    if source in BUILTIN_DATASETS:
        return load_builtin(source, options)
    path = Path(source).expanduser()
    if path.exists():
        return load_path(path, options)
    if looks_like_path(source):
        raise LorakitError(f"no such file or folder: {source}")
    return load_hub_dataset(source, options, list(BUILTIN_DATASETS))


def looks_like_path(source: str) -> bool:
    """A name with a data-file extension or a path prefix is a missing file, not a Hub name."""
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in SUPPORTED_EXTENSIONS
