"""Checkpoints that survive `kill -9` and resume a run exactly.

A checkpoint holds the trainable parameters, the optimizer and scheduler states, every random
generator, the data position (epoch, batch) and the run's bookkeeping. It is written into a
temporary folder that is renamed into place, and `checkpoints/latest` is replaced atomically
last, so a crash at any instant leaves the previous checkpoint intact and pointed to.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lorakit.errors import LorakitError
from lorakit.train.sharding import (
    gather_trainable,
    is_sharded,
    load_optimizer_state,
    load_trainable,
    optimizer_state,
)

KEEP = 2


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

    `progress` is JSON-able bookkeeping (epoch, batch in epoch, history, best metric, ...). A
    sharded model's state is gathered first, so every rank calls this; only `main` writes.
    """
    trainable = gather_trainable(model, main)
    optimizer_saved = optimizer_state(model, optimizer)
    if not main:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step-{step}"
    tmp = folder / f".tmp-step-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable, tmp / "trainable.safetensors")
    # Optimizer/scheduler/RNG states are plain tensors and Python values (no classes): loaded back
    # with weights_only=True, so a tampered checkpoint cannot run code.
    torch.save(
        {"optimizer": optimizer_saved, "scheduler": scheduler.state_dict(), "rng": rng_state()},
        tmp / "state.pt",
    )
    (tmp / "progress.json").write_text(json.dumps(progress))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    pointer = folder / ".latest.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, folder / "latest")
    for old in sorted(_steps(folder))[:-KEEP]:
        shutil.rmtree(folder / f"step-{old}", ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint `latest` points to, or None when there is no complete one."""
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    return path if (path / "progress.json").is_file() else None


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore everything `save_checkpoint` wrote; returns the progress bookkeeping."""
    trainable = load_file(path / "trainable.safetensors")
    parameters = dict(model.named_parameters())
    missing = sorted(set(trainable) - set(parameters))
    if missing:
        raise LorakitError(f"checkpoint {path} does not match this model (no parameter {missing[0]!r})")
    state = torch.load(path / "state.pt", weights_only=True)
    if is_sharded(model):  # every rank reads the files; the shards come from rank 0's copy
        load_trainable(model, trainable, main=True)
    else:
        with torch.no_grad():
            for name, tensor in trainable.items():
                parameters[name].copy_(tensor)
    load_optimizer_state(model, optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return json.loads((path / "progress.json").read_text())


def _steps(folder: Path) -> list[int]:
    return [int(p.name.removeprefix("step-")) for p in folder.glob("step-*") if p.name[5:].isdigit()]
