"""A source name → split tables, for every task: the one place data is found and read.

Sources, first match wins:

1. a builtin dataset of the task (the task passes its readers);
2. a path: one .csv/.tsv/.jsonl/.json/.parquet file (all train); a folder of split files named by
   their split (`train.*`, required; `validation.*`/`valid.*`/`val.*`/`dev.*`; `test.*`); or a
   `datasets` save_to_disk folder (a DatasetDict's splits by name, or a Dataset as train);
3. else a Hugging Face Hub dataset, `name` or `name:config`, read with `datasets.load_dataset`.

A name that looks like a path (a path prefix or a data-file extension) and does not exist is a
missing file, never sent to the Hub. Tables hold rows as read; which columns matter, what counts as
empty and what a label is belong to the task (`lorakit.data.classification`,
`lorakit.data.generative`). `datasets` is imported inside the functions that need it: importing it
costs about a second, and builtin and plain-file loading never need it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from lorakit.data.readers import SUPPORTED_EXTENSIONS, read_table
from lorakit.data.wording import first_line
from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

SPLITS = ("train", "validation", "test")
# Split names as they appear in the wild, by the split they stand for.
_SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


@dataclass
class Table:
    """One split as read: its rows and what messages call it (a file name, a split of a folder)."""

    frame: pd.DataFrame
    origin: str


@dataclass
class Source:
    """A source as read.

    Attributes:
        name: what was read, for reports: the builtin or Hub name, or the path (`~` expanded).
        tables: split ("train", and "validation"/"test" when the source has them) → its table.
        notes: what reading did (splits ignored, rows dropped by a builtin's clean-up).
        label_names: the class names in index order when the source defines them (a builtin's
            fixed classes, a `datasets` ClassLabel), else None.
    """

    name: str
    tables: dict[str, Table]
    notes: list[str] = field(default_factory=list)
    label_names: list[str] | None = None


def source_name(source: object) -> str:
    """`source` (a string or a path) as a string.

    Raises:
        LorakitError: `source` is neither, or blank.
    """
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise LorakitError(f"source must be a builtin dataset name, a path or a Hub name, got {source!r}")
    return str(source)


def read_source(
    source: str,
    builtins: Mapping[str, Callable[[], Source]],
    column_sets: Sequence[Sequence[str]],
    label_column: str | None = None,
) -> Source:
    """Read a builtin, a path or a Hub dataset (see the module docstring) as split tables.

    Args:
        source: the name, as `source_name` returns it.
        builtins: the task's builtin datasets, name → reader; their names also make the
            suggestions of the error for an unknown name.
        column_sets: for `datasets` sources, which columns to convert (a dataset may also hold
            images or embeddings): the first set whose columns a split has. A split with no
            complete set becomes an empty table of its column names, so the task's column check
            can list what is there.
        label_column: the column whose `datasets` ClassLabel (train's) names the classes: its
            integers are read as those names and -1 ("no label", as in GLUE test sets) as
            missing; None for tasks without labels.

    Raises:
        LorakitError: a missing path, an unreadable file or folder, a Hub name that cannot be
            loaded (the message lists the builtins, with a close match if any).
    """
    if source in builtins:
        return builtins[source]()
    path = Path(source).expanduser()
    if path.exists():
        return _read_path(path, column_sets, label_column)
    if _looks_like_path(source):
        raise LorakitError(f"no such file or folder: {source}")
    return _from_datasets(_read_hub_dataset(source, list(builtins)), source, column_sets, label_column)


def _looks_like_path(source: str) -> bool:
    """A name with a data-file extension or a path prefix is a missing file, not a Hub name."""
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in SUPPORTED_EXTENSIONS


def _read_path(path: Path, column_sets: Sequence[Sequence[str]], label_column: str | None) -> Source:
    """A file (all train), a folder of split files, or a `datasets` save_to_disk folder."""
    if not path.is_dir():
        return Source(str(path), {"train": Table(read_table(path), path.name)})
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _from_datasets(_read_saved_dataset(path), str(path), column_sets, label_column)
    tables = {split: Table(read_table(file), file.name) for split, file in _split_files(path).items()}
    return Source(str(path), tables)


def _split_of(name: str) -> str | None:
    """The split ("train", "validation", "test") a split or file name stands for, or None."""
    for split, aliases in _SPLIT_ALIASES.items():
        if name.lower() in aliases:
            return split
    return None


def _split_files(folder: Path) -> dict[str, Path]:
    """A folder's data files by the split their names stand for; train is required.

    Raises:
        LorakitError: two files stand for the same split, or none is train.
    """
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = _split_of(path.stem)
        if split is None or not path.is_file() or path.name.startswith("."):
            continue
        if split in files:
            raise LorakitError(f"{folder} has two {split} files, {files[split].name} and {path.name}; keep one")
        files[split] = path
    if "train" not in files:
        names = "/".join(name for aliases in _SPLIT_ALIASES.values() for name in aliases)
        raise LorakitError(
            f"{folder} has no train file: a data folder holds {names} files "
            f"({', '.join(SUPPORTED_EXTENSIONS)}) or a datasets save_to_disk dataset"
        )
    return files


def _read_saved_dataset(folder: Path) -> Dataset | DatasetDict:
    """The Dataset or DatasetDict a `save_to_disk` folder holds."""
    import datasets

    try:
        return datasets.load_from_disk(str(folder))
    # `datasets` reads its JSON files without checking their shape: a damaged one raises whatever its
    # indexing first meets (TypeError, KeyError, IndexError, AttributeError...), all meaning the same.
    except Exception as error:
        damaged = "its dataset_dict.json, state.json or dataset_info.json is damaged; re-save it with save_to_disk"
        reason = first_line(error, 200) if isinstance(error, (OSError, ValueError)) else damaged
        raise LorakitError(f"{folder} looks like a datasets save_to_disk folder but does not load: {reason}") from None


def _read_hub_dataset(name: str, builtin_names: list[str]) -> Dataset | DatasetDict:
    """`datasets.load_dataset(name)`; `name:config` picks a configuration (e.g. `nyu-mll/glue:sst2`)."""
    import datasets

    repo, _, config = name.partition(":")
    try:
        return datasets.load_dataset(repo, config or None)
    except (OSError, ValueError) as error:  # ConnectionError, DatasetNotFoundError, a missing config
        close = difflib.get_close_matches(name, builtin_names, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        raise LorakitError(
            f"{name!r} is neither a builtin dataset ({', '.join(builtin_names)}), a file or folder, nor a dataset "
            f"reachable on the Hugging Face Hub ({first_line(error, 200)}){suggestion}"
        ) from None


def _from_datasets(
    data: Dataset | DatasetDict, source: str, column_sets: Sequence[Sequence[str]], label_column: str | None
) -> Source:
    """A Dataset (all of it train) or DatasetDict (splits by name) as tables of pandas frames."""
    import datasets

    splits, notes = _named_splits(data, source)
    feature = splits["train"].features.get(label_column) if label_column is not None else None
    label_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    tables = {}
    for split, split_data in splits.items():
        present = set(split_data.column_names)
        columns = next((list(names) for names in column_sets if set(names) <= present), None)
        if columns is None:
            frame = pd.DataFrame(columns=split_data.column_names)
        else:
            frame = split_data.select_columns(columns).to_pandas()
        if label_names is not None and label_column in frame.columns:
            frame[label_column] = [
                label_names[value] if value is not None and value >= 0 else None
                for value in frame[label_column].tolist()
            ]
        tables[split] = Table(frame, f"split {split!r} of {source}")
    return Source(source, tables, notes, label_names)


def _named_splits(data: Dataset | DatasetDict, source: str) -> tuple[dict[str, Dataset], list[str]]:
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
        split = _split_of(name)
        if split is None:
            notes.append(f"ignored split {name!r} (not train, validation or test)")
        elif split in splits:
            raise LorakitError(f"{source} has two {split} splits ({sorted(named)}); keep one")
        else:
            splits[split] = split_data
    if "train" not in splits:
        raise LorakitError(f"{source} has no train split (splits: {sorted(named)}); name one of them 'train'")
    return splits, notes
