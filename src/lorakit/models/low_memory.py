"""Loading a checkpoint with one tensor in flight: what makes big models load in small memory.

transformers (5.x) reads checkpoints in two ways that cost memory beyond the model itself:
it maps safetensors files into memory, and every page read stays resident until the file is
closed (a 3.2 GB checkpoint adds 3.2 GB to the peak, next to the tensors copied out of it); and
it reads tensors ahead on 4 threads, so many full-precision tensors can be alive before the
first is placed. `low_memory_loading()` turns both off for the `from_pretrained` calls inside it:
the load peaks near the loaded model plus its largest tensor. Only memory changes, never results.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

ASYNC_LOAD_SWITCH = "HF_DEACTIVATE_ASYNC_LOAD"  # transformers' switch for its read-ahead threads


@contextlib.contextmanager
def low_memory_loading() -> Iterator[None]:
    """Inside, transformers reads safetensors with `pread` (no mapping) one tensor at a time."""
    with _reading_without_mmap(), _sequential_loading():
        yield


@contextlib.contextmanager
def _reading_without_mmap() -> Iterator[None]:
    """safetensors' `pread` backend (what transformers itself uses on Windows) reads each tensor
    into memory that is freed with it. Where transformers no longer opens files through
    `modeling_utils.safe_open`, this changes nothing."""
    from transformers import modeling_utils

    original = getattr(modeling_utils, "safe_open", None)
    if original is None:
        yield
        return

    def open_with_pread(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("backend") == "mmap" and kwargs.get("device", "cpu") == "cpu":
            kwargs["backend"] = "pread"
        return original(*args, **kwargs)

    modeling_utils.safe_open = open_with_pread
    try:
        yield
    finally:
        modeling_utils.safe_open = original


@contextlib.contextmanager
def _sequential_loading() -> Iterator[None]:
    """One tensor read at a time (measured: with read-ahead, a 242M-parameter model quantized while
    loading peaked higher than loaded whole and quantized after)."""
    previous = os.environ.get(ASYNC_LOAD_SWITCH)
    os.environ[ASYNC_LOAD_SWITCH] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[ASYNC_LOAD_SWITCH]
        else:
            os.environ[ASYNC_LOAD_SWITCH] = previous
