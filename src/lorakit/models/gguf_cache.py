"""Turn a packaged GGUF checkpoint into a plain transformers folder, once, in lorakit's cache.

Loading a GGUF file makes transformers dequantize every tensor (~17 s for SmolLM2-135M on this
CPU) and the result refuses `save_pretrained` ("quantized with gguf"). So the first use rebuilds a
plain model from the GGUF's config, copies the dequantized weights in, and saves model, tokenizer
(with its chat template) and generation config to `<cache>/models/<name>/`; later loads take
~0.2 s. Weights are kept in fp32: Q4_1 dequantization (fp16 scale × int4 + fp16 offset) is exact
in fp32 and would be rounded again in bf16.

The cache root is `$LORAKIT_CACHE`, else `$XDG_CACHE_HOME/lorakit`, else `~/.cache/lorakit`.
Concurrent first uses (DDP ranks, parallel test workers) are serialised by a file lock, and the
folder appears atomically, so a reader never sees half a conversion. Converting leaves torch's
random generator as it found it, so the run that converts trains exactly like later runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

READY_MARKER = ".lorakit-converted"


def cache_root() -> Path:
    """Where lorakit keeps converted models: $LORAKIT_CACHE, $XDG_CACHE_HOME/lorakit or ~/.cache/lorakit."""
    if os.environ.get("LORAKIT_CACHE"):
        return Path(os.environ["LORAKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "lorakit"


def converted_folder(name: str, gguf_path: Path) -> Path:
    """The plain HF folder for `gguf_path`, converting it first if the cache does not have it."""
    target = cache_root() / "models" / name
    if (target / READY_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_name(f".{name}.lock")):
        if not (target / READY_MARKER).is_file():  # another process may have finished meanwhile
            import torch

            # Building the plain model initialises its weights from torch's generator. A run that
            # converts on first use must draw the same dropout masks as every later run of its seed.
            with torch.random.fork_rng(devices=[]):
                _convert(gguf_path, target)
    return target


def _convert(gguf_path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    folder, file = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    config = loaded.config
    # The GGUF load marks the config as quantized; a plain model from the same config saves normally.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(staging)
    AutoTokenizer.from_pretrained(folder, gguf_file=file).save_pretrained(staging)
    (staging / READY_MARKER).write_text(f"converted from {gguf_path}\n")
    shutil.rmtree(target, ignore_errors=True)  # an interrupted older attempt without the marker
    os.replace(staging, target)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
