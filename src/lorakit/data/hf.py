"""`datasets` objects as split tables: `save_to_disk` folders and, as a last resort, Hub datasets.

`datasets` is imported inside the functions that need it: importing it costs about a second, and
builtin and plain-file loading never need it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from lorakit.data.assemble import Table, assemble
from lorakit.data.options import LoadOptions
from lorakit.data.types import ClassificationData
from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

# Split names as they appear in the wild, by the split they stand for.
SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


def split_of(name: str) -> str | None:
    """The split ("train", "validation", "test") a split or file name stands for, or None."""
    for split, aliases in SPLIT_ALIASES.items():
        if name.lower() in aliases:
            return split
    return None


def is_saved_dataset(folder: Path) -> bool:
    """Whether a folder was written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def load_saved_dataset(folder: Path, options: LoadOptions) -> ClassificationData:
    """A `save_to_disk` folder: a DatasetDict's train/validation/test, or a Dataset used as train."""
    return from_datasets(read_saved_dataset(folder), str(folder), options)


def read_saved_dataset(folder: Path) -> Dataset | DatasetDict:
    """The Dataset or DatasetDict a `save_to_disk` folder holds."""
    import datasets

    try:
        return datasets.load_from_disk(str(folder))
    except (OSError, ValueError) as error:
        raise LorakitError(
            f"{folder} looks like a datasets save_to_disk folder but does not load: {_first_line(error)}"
        ) from None


def load_hub_dataset(name: str, options: LoadOptions, builtin_names: list[str]) -> ClassificationData:
    """A dataset from the Hugging Face Hub (see `read_hub_dataset`) as classification data."""
    return from_datasets(read_hub_dataset(name, builtin_names), name, options)


def read_hub_dataset(name: str, builtin_names: list[str]) -> Dataset | DatasetDict:
    """A dataset from the Hugging Face Hub, as `datasets.load_dataset(name)`; `name:config` picks
    a configuration (e.g. `nyu-mll/glue:sst2`).

    Raises:
        LorakitError: the Hub is unreachable or has no such dataset; the message says the name is
            neither a builtin (listed, with a close match if any), a file, nor reachable.
    """
    import datasets

    repo, _, config = name.partition(":")
    try:
        return datasets.load_dataset(repo, config or None)
    except (OSError, ValueError) as error:  # ConnectionError, DatasetNotFoundError, a missing config
        close = difflib.get_close_matches(name, builtin_names, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        raise LorakitError(
            f"{name!r} is neither a builtin dataset ({', '.join(builtin_names)}), a file or folder, nor a dataset "
            f"reachable on the Hugging Face Hub ({_first_line(error)}){suggestion}"
        ) from None


def from_datasets(data: Dataset | DatasetDict, source: str, options: LoadOptions) -> ClassificationData:
    """Convert a Dataset (all of it is train) or DatasetDict (splits by name) to ClassificationData.

    A ClassLabel label column fixes the class names and their order; its -1 ("no label", as in
    GLUE test sets) reads as a missing label.
    """
    import datasets

    splits, notes = named_splits(data, source)
    label_feature = splits["train"].features.get(options.label_column)
    label_order = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
    wanted = [column for column in (options.text_column, options.label_column, options.text_pair_column) if column]
    tables = {}
    for split, split_data in splits.items():
        # Only the needed columns are converted (a dataset may also hold images or embeddings);
        # with one absent, an empty frame of the column names lets `assemble` report what is there.
        if set(wanted) <= set(split_data.column_names):
            frame = split_data.select_columns(wanted).to_pandas()
        else:
            frame = pd.DataFrame(columns=split_data.column_names)
        if label_order is not None and options.label_column in frame.columns:
            frame[options.label_column] = [
                label_order[value] if value is not None and value >= 0 else None
                for value in frame[options.label_column].tolist()
            ]
        tables[split] = Table(frame, f"split {split!r} of {source}")
    return assemble(tables, options, source, label_order=label_order, notes=notes)


def named_splits(data: Dataset | DatasetDict, source: str) -> tuple[dict[str, Dataset], list[str]]:
    """A Dataset as train, or a DatasetDict's splits by the split their names stand for; notes
    name the splits ignored (neither train, validation nor test).

    Raises:
        LorakitError: two splits stand for the same split, or none is train.
    """
    import datasets

    named = {"train": data} if isinstance(data, datasets.Dataset) else dict(data)
    splits: dict[str, Dataset] = {}
    notes = []
    for name, split_data in named.items():
        split = split_of(name)
        if split is None:
            notes.append(f"ignored split {name!r} (not train, validation or test)")
        elif split in splits:
            raise LorakitError(f"{source} has two {split} splits ({sorted(named)}); keep one")
        else:
            splits[split] = split_data
    if "train" not in splits:
        raise LorakitError(f"{source} has no train split (splits: {sorted(named)}); name one of them 'train'")
    return splits, notes


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__
