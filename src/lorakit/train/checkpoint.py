"""Checkpoints that survive `kill -9`, a full disk or a damaged file, and resume a run exactly.

A checkpoint `checkpoints/step-<N>/` holds the trainable parameters (trainable.safetensors), the
optimizer and scheduler states and every random generator (state.pt), and the run's bookkeeping
(progress.json: the data position, history, train_seconds, ...); manifest.json lists each of
those files with its size and SHA-256. It is written into a temporary sibling folder, each file
flushed to the disk, and renamed into place; a failure or an interrupt while writing removes the
temporary folder, so a step-<N> folder is complete or absent. `checkpoints/latest` then names it,
for people and scripts: `--resume` itself takes the newest step-<N> whose files match their
manifest, and says which damaged ones it skipped.

The newest `KEEP` checkpoints up to the one just written are kept; older ones are deleted only
after a newer one is complete on the disk, and those past it (damaged ones a resume skipped)
go too, as the resumed run writes them again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from lorakit.errors import LorakitError
from lorakit.train.sharding import (
    gather_trainable,
    is_sharded,
    load_optimizer_state,
    load_trainable,
    optimizer_state,
)

KEEP = 2  # checkpoints kept: the newest, and the one before it should the newest be damaged later
TRAINABLE, STATE, PROGRESS, MANIFEST = "trainable.safetensors", "state.pt", "progress.json", "manifest.json"
MANIFEST_VERSION = 1
POINTER, POINTER_TMP = "latest", ".latest.tmp"


def rng_state() -> dict[str, Any]:
    """Every generator's state as tensors and plain numbers (loadable with weights_only=True)."""
    version, python_state, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": (version, torch.tensor(python_state, dtype=torch.int64), gauss),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore every generator from `rng_state()`'s output."""
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state.tolist()), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    progress: dict[str, Any],
    main: bool = True,
) -> Path | None:
    """Write checkpoint `step-<step>` under `folder`, point `latest` at it, drop old ones.

    `progress` is JSON-able bookkeeping (`TrainState.state_dict()`). A sharded model's state is
    gathered first, so every rank calls this; only `main` writes.

    Raises:
        LorakitError: the disk refused a write (full, read-only, ...); nothing of this checkpoint
            is left, and the earlier ones are untouched.
    """
    trainable = gather_trainable(model, main)
    optimizer_saved = optimizer_state(model, optimizer)
    if not main:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(folder)
    final, tmp = folder / f"step-{step}", folder / f".tmp-step-{step}"
    # Optimizer/scheduler/RNG states are plain tensors and Python values (no classes): loaded back
    # with weights_only=True, so a tampered checkpoint cannot run code.
    state = {"optimizer": optimizer_saved, "scheduler": scheduler.state_dict(), "rng": rng_state()}
    try:
        tmp.mkdir()
        written = {
            TRAINABLE: _write(tmp / TRAINABLE, lambda file: file.write(save(trainable))),
            STATE: _write(tmp / STATE, lambda file: torch.save(state, file)),
            PROGRESS: _write(tmp / PROGRESS, lambda file: file.write(json.dumps(progress).encode())),
        }
        manifest = {"version": MANIFEST_VERSION, "step": step, "files": written}
        _write(tmp / MANIFEST, lambda file: file.write(json.dumps(manifest, indent=1).encode()))
        _sync_folder(tmp)
        shutil.rmtree(final, ignore_errors=True)  # a damaged one a resume skipped: written again here
        os.replace(tmp, final)
        _sync_folder(folder)
        _write(folder / POINTER_TMP, lambda file: file.write(final.name.encode()))
        os.replace(folder / POINTER_TMP, folder / POINTER)
        _sync_folder(folder)
    except BaseException as error:  # an interrupt too: no half-written folder stays behind
        _remove_leftovers(folder)
        if isinstance(error, OSError):
            raise LorakitError(
                f"could not finish checkpoint {final} ({error.strerror or error}); the earlier checkpoints are "
                f"untouched: make room, then continue with lorakit train --resume {folder.parent}"
            ) from None
        raise
    _drop_old(folder, step)
    return final


class _Sink:
    """A file being written that hashes what goes in, and keeps the OS error of a failed write
    (torch.save may report one as a RuntimeError of its own)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.bytes = 0
        self.error: OSError | None = None

    def write(self, data: bytes | memoryview) -> int:
        """Write `data` through to the file, hashing it."""
        try:
            written = self.file.write(data)
        except OSError as error:
            self.error = error
            raise
        self.sha256.update(data)
        self.bytes += memoryview(data).nbytes
        return written

    def flush(self) -> None:
        """Flush the file's buffer."""
        self.file.flush()


def _write(path: Path, fill: Callable[[_Sink], object]) -> dict[str, Any]:
    """Create `path` with `fill(file)`, flushed to the disk; returns its manifest entry
    `{"bytes", "sha256"}` (of the bytes written)."""
    with open(path, "wb") as file:
        sink = _Sink(file)
        try:
            fill(sink)
        except Exception:
            if sink.error is not None:
                raise sink.error from None
            raise
        file.flush()
        os.fsync(file.fileno())
    return {"bytes": sink.bytes, "sha256": sink.sha256.hexdigest()}


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename, a new file) to the disk, where the OS can (not Windows)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_leftovers(folder: Path) -> None:
    """Temporary files of a save that did not finish (a process killed mid-write: the run lock says
    that no other process is writing here)."""
    for stale in folder.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    (folder / POINTER_TMP).unlink(missing_ok=True)


def _drop_old(folder: Path, step: int) -> None:
    """Keep the newest `KEEP` checkpoints up to `step` (just written); delete the rest."""
    steps = _steps(folder)
    kept = sorted(s for s in steps if s <= step)[-KEEP:]
    for old in set(steps) - set(kept):
        shutil.rmtree(folder / f"step-{old}", ignore_errors=True)


def damage(path: Path) -> str | None:
    """Why checkpoint `path` cannot be trusted, or None when every file matches its manifest. A
    checkpoint without a manifest (written before lorakit kept checksums) is judged by its files
    being there."""
    if not (path / MANIFEST).exists():
        missing = [name for name in (TRAINABLE, STATE, PROGRESS) if not (path / name).is_file()]
        return f"{missing[0]} is missing" if missing else None
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
        expected = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"its {MANIFEST} is unreadable ({type(error).__name__})"
    for name in (TRAINABLE, STATE, PROGRESS):
        if name not in expected:
            return f"its {MANIFEST} does not list {name}"
    for name, (size, digest) in expected.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size:,} bytes where {size:,} were written (truncated or overwritten)"
        if _sha256(file) != digest:
            return f"{name} does not match its SHA-256 (it changed after it was written)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Found:
    """What `--resume` found in a checkpoints folder: the newest intact checkpoint (None when
    none is), and each newer one it skipped with the reason (`name`, `why`)."""

    path: Path | None
    skipped: list[tuple[str, str]]
    checksummed: bool = True  # False: a checkpoint from before manifests, taken unverified


def newest_intact(folder: Path) -> Found:
    """The newest checkpoint in `folder` whose files are whole, checked newest first."""
    skipped = []
    for step in sorted(_steps(folder), reverse=True):
        path = folder / f"step-{step}"
        why = damage(path)
        if why is None:
            return Found(path, skipped, checksummed=(path / MANIFEST).exists())
        skipped.append((path.name, why))
    return Found(None, skipped)


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote; returns the progress bookkeeping.

    Raises:
        LorakitError: a file cannot be read (only a checkpoint without a manifest gets this far
            damaged), or the checkpoint is of another model.
    """
    try:
        trainable = load_file(path / TRAINABLE)
        state = torch.load(path / STATE, weights_only=True)
        progress = json.loads((path / PROGRESS).read_text())
    except Exception as error:  # a damaged file fails in its reader's own way: say which, in one line
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        raise LorakitError(
            f"checkpoint {path} cannot be read ({type(error).__name__}: {reason}); delete it to resume from the "
            "one before"
        ) from None
    parameters = dict(model.named_parameters())
    missing = sorted(set(trainable) - set(parameters))
    if missing:
        raise LorakitError(f"checkpoint {path} does not match this model (no parameter {missing[0]!r})")
    if is_sharded(model):  # every rank reads the files; the shards come from rank 0's copy
        load_trainable(model, trainable, main=True)
    else:
        with torch.no_grad():
            for name, tensor in trainable.items():
                parameters[name].copy_(tensor)
    load_optimizer_state(model, optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return progress


def _steps(folder: Path) -> list[int]:
    return [int(p.name.removeprefix("step-")) for p in folder.glob("step-*") if p.name[5:].isdigit()]
