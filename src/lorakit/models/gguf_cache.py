"""Turn a GGUF checkpoint (packaged, or any file a user passes) into a plain transformers folder,
once, in lorakit's cache.

Loading a GGUF file makes transformers dequantize every tensor (~17 s for SmolLM2-135M on this
CPU) and the result refuses `save_pretrained` ("quantized with gguf"). So the first use rebuilds a
plain model from the GGUF's config, copies the dequantized weights in, and saves model, tokenizer
(with its chat template) and generation config to `<cache>/models/<name>/`; later loads take
~0.2 s. Weights are kept in fp32: Q4_1 dequantization (fp16 scale × int4 + fp16 offset) is exact
in fp32 and would be rounded again in bf16.

Before converting, the file's header is read with `gguf.GGUFReader`: a damaged file or an
architecture transformers cannot load as a causal LM is refused with a one-line `LorakitError`,
as is any failure of the conversion itself, which then leaves no folder behind.

The cache root is `$LORAKIT_CACHE`, else `$XDG_CACHE_HOME/lorakit`, else `~/.cache/lorakit`.
Concurrent first uses (DDP ranks, parallel test workers) are serialised by a file lock, and the
folder appears atomically, so a reader never sees half a conversion. Converting leaves torch's
random generator as it found it, so the run that converts trains exactly like later runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.folders import write_failure

READY_MARKER = ".lorakit-converted"
# llama.cpp's names for architectures that transformers spells differently (as its load_gguf_checkpoint renames them).
GGUF_ARCHITECTURE_NAMES = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
}


def cache_root() -> Path:
    """Where lorakit keeps converted models: $LORAKIT_CACHE, $XDG_CACHE_HOME/lorakit or ~/.cache/lorakit."""
    if os.environ.get("LORAKIT_CACHE"):
        return Path(os.environ["LORAKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "lorakit"


def cache_name(gguf_path: Path) -> str:
    """`<stem>-<12 hex>`: the cache folder name of a user's GGUF file, from sha256 over its resolved
    path, size and modification time in nanoseconds.

    Why not hash the content: a multi-GB file would be read in full on every run, and a hash of
    only its first and last MiB would give two fine-tunes of one base (same layout, same size,
    different middle layers) one folder. One `stat` is free, and rewriting or replacing the file
    changes size or mtime_ns, so a stale conversion is never reused; the price is that a moved or
    copied file is converted again.
    """
    resolved = gguf_path.expanduser().resolve()
    stat = resolved.stat()
    identity = f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", resolved.stem)  # a folder and lock-file name on any file system
    return f"{stem}-{digest}"


def supported_architectures() -> list[str]:
    """The GGUF architectures transformers loads as a causal LM (lorakit's conversion makes one)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    # The list also names GGUF metadata sections ("general", "tokenizer") and encoder-decoders (t5).
    return [name for name in GGUF_SUPPORTED_ARCHITECTURES if name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES]


def check_gguf(gguf_path: Path) -> None:
    """Read the header of `gguf_path` and check transformers can convert it.

    Raises:
        LorakitError: the file is not a readable GGUF (truncated, damaged, not GGUF at all), or
            its `general.architecture` is not one of `supported_architectures()`.
    """
    from gguf import GGUFReader

    try:
        field = GGUFReader(gguf_path).get_field("general.architecture")
        architecture = field.contents() if field is not None else None
    # What GGUFReader raises on truncated or damaged files (found by fuzzing: ValueError, UnicodeDecodeError
    # and IndexError from numpy views past the end, KeyError for a duplicate key), OSError when unreadable.
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise LorakitError(
            f"{gguf_path} is not a readable GGUF file ({_first_line(error)}); "
            "download it again (it may be truncated) or pass a model folder"
        ) from None
    supported = supported_architectures()
    if not isinstance(architecture, str) or GGUF_ARCHITECTURE_NAMES.get(architecture, architecture) not in supported:
        named = "no general.architecture" if field is None else f"architecture {architecture!r}"
        raise LorakitError(
            f"{gguf_path} has {named}, which transformers cannot load from GGUF as a causal LM; "
            f"supported: {', '.join(supported)}; pass a GGUF of one of these or a model folder"
        )


def converted_folder(name: str, gguf_path: Path) -> Path:
    """The plain HF folder for `gguf_path`, converting it first if the cache does not have it.

    Raises:
        LorakitError: `check_gguf` refuses the file, or the conversion fails (nothing is cached then).
    """
    target = cache_root() / "models" / name
    if (target / READY_MARKER).is_file():
        return target
    check_gguf(gguf_path)  # before anything is created, so a refused file leaves the cache untouched
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.with_name(f".{name}.lock")):
        if not (target / READY_MARKER).is_file():  # another process may have finished meanwhile
            import torch

            # Building the plain model initialises its weights from torch's generator. A run that
            # converts on first use must draw the same dropout masks as every later run of its seed.
            with torch.random.fork_rng(devices=[]):
                _convert(gguf_path, target)
    return target


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _convert(gguf_path: Path, target: Path) -> None:
    staging = target.with_name(f".{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_plain_folder(gguf_path, staging)
        shutil.rmtree(target, ignore_errors=True)  # an interrupted older attempt without the marker
        os.replace(staging, target)
    # transformers' GGUF loader fails on files it half understands with many types (KeyError for a
    # missing config key, ValueError, RuntimeError on a shape mismatch, NotImplementedError for a
    # quantisation type); all of them mean the same to the user: this file cannot be converted.
    except Exception as error:
        refused = write_failure(error, target)
        if refused is not None:  # the cache's disk, not the file
            raise refused from None
        raise LorakitError(
            f"cannot convert {gguf_path} into a transformers model ({_first_line(error)}); "
            "the file may be damaged or use a variant transformers does not support: pass a model folder instead"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # renamed away on success; never left half written


def _write_plain_folder(gguf_path: Path, staging: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

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


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
