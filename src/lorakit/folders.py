"""Writing outputs all at once: a folder or a file is staged beside its destination, then renamed
into place.

    out/                      the destination: absent, or the previous version, untouched until...
    .out.1f2e3d4c.partial/    ...the staged copy is complete and renamed onto it
    .metrics.json.9a8b7c6d.tmp

A failure while writing leaves nothing half-written behind: the staged copy is deleted, and a
folder or file being replaced stays as it was. What lands in place gets the permissions a new file
gets under the user's umask (0644 under umask 022), also where the writing library creates its
files private (safetensors writes 0600). A write the machine refuses (disk full, permission
denied, a read-only file system, a file where a folder should be) becomes one `LorakitError` line
naming the destination and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from safetensors import SafetensorError

from lorakit.errors import LorakitError, option_setting

# errno → what a message says about it, and the fix.
_REFUSALS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or write to another disk"),
    errno.EFBIG: ("the file is too large for this file system", "write to another disk"),
    errno.EACCES: ("permission denied", "write to a folder you may write to"),
    errno.EPERM: ("permission denied", "write to a folder you may write to"),
    errno.EROFS: ("the file system is read-only", "write to a writable disk"),
    errno.EEXIST: ("a file is in the way", "remove it or choose another path"),
    errno.ENOTDIR: ("a file is where a folder should be", "remove it or choose another path"),
    errno.EISDIR: ("a folder is where a file should be", "remove it or choose another path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
}
# safetensors reports the OS error inside its message: "I/O error: No space left on device (os error 28)",
# or "IoError(Os { code: 28, kind: StorageFull, ... })".
_SAFETENSORS_CODE = re.compile(r"\((?:os error|Os \{ code:) (\d+)")


class WriteRefused(LorakitError):
    """A write to `path` that the machine refused; `code` is the errno (ENOSPC: disk full, ...)."""

    def __init__(self, code: int, path: Path) -> None:
        reason, fix = _REFUSALS[code]
        super().__init__(f"cannot write {path}: {reason}; {fix}")
        self.code = code
        self.path = path


def write_failure(error: BaseException, path: Path) -> WriteRefused | None:
    """The one-line error for a write to `path` that the machine refused (`error`: an OSError,
    safetensors' error wrapping one, or a `WriteRefused` already), or None when `error` is not
    such a refusal."""
    if isinstance(error, WriteRefused):
        code = error.code
    elif isinstance(error, OSError):
        code = error.errno
    elif isinstance(error, SafetensorError) and (found := _SAFETENSORS_CODE.search(str(error))):
        code = int(found.group(1))
    else:
        return None
    return WriteRefused(code, path) if code in _REFUSALS else None


@contextlib.contextmanager
def refused_writes(path: Path) -> Iterator[None]:
    """Turn a write refused inside the block (see `write_failure`) into a `WriteRefused` naming
    `path`, also one refused and named already by a nested block: the user's destination is `path`,
    not the temporary inside it that was being written."""
    try:
        yield
    except (OSError, SafetensorError, WriteRefused) as error:
        failure = write_failure(error, path)
        if failure is None:
            raise
        raise failure from None


def check_writable_folder(folder: Path, what: str = "output folder") -> None:
    """Refuse, before any work, a `folder` that cannot be written: a file is there, or the folder
    it would be created in (or it itself) cannot be written (`_check_creatable`)."""
    if folder.exists() and not folder.is_dir():
        raise LorakitError(f"{what} {folder} is a file; pass a folder path")
    _check_creatable(folder, what)


def check_writable_file(path: Path, what: str = "output file") -> None:
    """Refuse, before any work, a file `path` that cannot be written: a folder is there, or the
    folder it would be written in cannot be written (`_check_creatable`)."""
    if path.is_dir():
        raise LorakitError(f"{what} {path} is a folder; pass a file path")
    _check_creatable(path.parent, what, path)


def _check_creatable(folder: Path, what: str, target: Path | None = None) -> None:
    """Refuse a `folder` (holding `target`, the path messages name; default the folder) whose
    nearest existing ancestor is a file or is not writable (permissions, a read-only file system)."""
    target = target or folder
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise LorakitError(f"{what} {target} cannot be created: {existing} is a file; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise WriteRefused(_access_errno(existing), target)


def _access_errno(folder: Path) -> int:
    """EROFS when `folder` lies on a read-only file system, else EACCES."""
    with contextlib.suppress(OSError, AttributeError):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return errno.EROFS
    return errno.EACCES


def check_output_folder(out_dir: Path, overwrite: bool, inputs: Iterable[Path]) -> None:
    """Refuse, before any work, an output that is a file, a non-empty folder (unless `overwrite`),
    a folder that is or holds one of the `inputs` (replacing it would destroy them), or one that
    cannot be written (`check_writable_folder`)."""
    check_writable_folder(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise LorakitError(
            f"output folder {out_dir} exists and is not empty; pass {option_setting('overwrite', True)} to replace it"
        )
    target = out_dir.resolve()
    for source in inputs:
        resolved = source.resolve()
        if target == resolved or target in resolved.parents:
            raise LorakitError(f"output folder {out_dir} holds the input {source}; write to another folder")


@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `out_dir`; on success it becomes `out_dir` (replacing
    any folder there), on any error it is deleted and `out_dir` is left as it was.

    Raises:
        LorakitError: the machine refused a write (`write_failure`), naming `out_dir`.
    """
    with refused_writes(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.parent.glob(f".{out_dir.name}.*.partial"):  # left by a process killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        tag = uuid.uuid4().hex[:8]
        staging = out_dir.with_name(f".{out_dir.name}.{tag}.partial")
        staging.mkdir()
        try:
            yield staging
            mode = new_file_mode()
            for file in staging.rglob("*"):
                if file.is_file():
                    file.chmod(mode)
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


@contextlib.contextmanager
def staged_files(*targets: Path) -> Iterator[list[Path]]:
    """Yield one temporary path beside each target to write; when the block ends, every one is
    renamed onto its target, all complete before any replaces its target. On any error the
    temporaries are deleted and the targets are left as they were.

    Raises:
        LorakitError: the machine refused a write (`write_failure`), naming the first target.
    """
    with refused_writes(targets[0]):
        tag = uuid.uuid4().hex[:8]
        staged = [target.with_name(f".{target.name}.{tag}.tmp") for target in targets]
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a process killed mid-write
                stale.unlink(missing_ok=True)
        try:
            yield staged
            mode = new_file_mode()
            for temporary in staged:
                temporary.chmod(mode)
            for temporary, target in zip(staged, targets, strict=True):
                os.replace(temporary, target)
        finally:
            for temporary in staged:
                temporary.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically: the complete file or the previous one, never half."""
    with staged_files(path) as (temporary,):
        temporary.write_text(text, encoding="utf-8")


def new_file_mode() -> int:
    """The permissions a new file gets under the process's umask: 0o666 & ~umask."""
    # os.umask can only be read by setting it; it is put back at once.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask
