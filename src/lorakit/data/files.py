"""User data on disk: one file, a folder of split files, or a `datasets` save_to_disk folder.

A single file is all train (validation and test are carved from it). A folder holds split files
named by their split: `train.*` (required), `validation.*` / `valid.*` / `val.*` / `dev.*`, and
`test.*`, each of any supported extension.
"""

from __future__ import annotations

from pathlib import Path

from lorakit.data.assemble import Table, assemble
from lorakit.data.hf import SPLIT_ALIASES, is_saved_dataset, load_saved_dataset, split_of
from lorakit.data.options import LoadOptions
from lorakit.data.readers import SUPPORTED_EXTENSIONS, read_table
from lorakit.data.types import ClassificationData
from lorakit.errors import LorakitError


def load_path(path: Path, options: LoadOptions) -> ClassificationData:
    """Load a data file or folder (see the module docstring); `path` must exist."""
    if path.is_dir():
        if is_saved_dataset(path):
            return load_saved_dataset(path, options)
        return _load_split_folder(path, options)
    return assemble({"train": Table(read_table(path), path.name)}, options, str(path))


def _load_split_folder(folder: Path, options: LoadOptions) -> ClassificationData:
    tables = {split: Table(read_table(path), path.name) for split, path in split_files(folder).items()}
    return assemble(tables, options, str(folder))


def split_files(folder: Path) -> dict[str, Path]:
    """A folder's data files by the split their names stand for; train is required.

    Raises:
        LorakitError: two files stand for the same split, or none is train.
    """
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = split_of(path.stem)
        if split is None or not path.is_file() or path.name.startswith("."):
            continue
        if split in files:
            raise LorakitError(f"{folder} has two {split} files, {files[split].name} and {path.name}; keep one")
        files[split] = path
    if "train" not in files:
        names = "/".join(name for aliases in SPLIT_ALIASES.values() for name in aliases)
        raise LorakitError(
            f"{folder} has no train file: a data folder holds {names} files "
            f"({', '.join(SUPPORTED_EXTENSIONS)}) or a datasets save_to_disk dataset"
        )
    return files
