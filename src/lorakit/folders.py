"""Writing an output folder all at once: staged next to its destination, then renamed into place.

A failure while writing leaves no half-written folder behind, and an existing folder that is
being replaced (overwrite) stays untouched until the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from lorakit.errors import LorakitError


def check_output_folder(out_dir: Path, overwrite: bool, inputs: Iterable[Path]) -> None:
    """Refuse, before any work, an output that is a file, a non-empty folder (unless `overwrite`),
    or a folder that is or holds one of the `inputs` (replacing it would destroy them)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise LorakitError(f"output {out_dir} is a file; pass a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise LorakitError(
            f"output folder {out_dir} exists and is not empty; pass --overwrite (overwrite=True) to replace it"
        )
    target = out_dir.resolve()
    for source in inputs:
        resolved = source.resolve()
        if target == resolved or target in resolved.parents:
            raise LorakitError(f"output folder {out_dir} holds the input {source}; write to another folder")


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `out_dir`; on success it becomes `out_dir` (replacing
    any folder there), on any error it is deleted and `out_dir` is left as it was."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.partial"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tag = uuid.uuid4().hex[:8]
    staging = out_dir.with_name(f".{out_dir.name}.{tag}.partial")
    staging.mkdir()
    try:
        yield staging
        _swap_in(staging, out_dir, out_dir.with_name(f".{out_dir.name}.{tag}.old"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staging: Path, target: Path, old: Path) -> None:
    """Two renames: the old folder aside, the new one in; the old one comes back if the second fails."""
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
