"""Activation checkpointing: keep only each transformer block's input, recompute the rest in backward.

Without it, backward needs every intermediate of every block (for a Llama block about
`12·h + 4·i` values per token, h = hidden, i = intermediate size), which for a batch of
thousands of tokens dwarfs a LoRA model's weights. With it, the forward keeps one `(tokens, h)`
tensor per block and the backward re-runs each block once before differentiating it: about one
more forward pass of compute (+25–35 % step time) for activations that shrink by `~(12·h + 4·i)/h`.

transformers' own per-block machinery does the work (`GradientCheckpointingLayer`), always in
torch's non-reentrant mode: it needs no input that requires grad (LoRA's frozen embeddings are
fine), replays dropout with the same random state, and works under DDP. Offloading moves the
kept block inputs to pinned host memory (CUDA only: on CPU they are host memory already).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from lorakit.errors import LorakitError


def supports_activation_checkpointing(model: nn.Module) -> bool:
    """Whether `model` is a transformers model whose blocks can be checkpointed."""
    return bool(getattr(model, "supports_gradient_checkpointing", False))


def enable_activation_checkpointing(model: nn.Module, offload: bool = False, device_type: str = "cpu") -> None:
    """Checkpoint every transformer block of `model` (non-reentrant); `offload` keeps the saved
    block inputs in pinned CPU memory while the GPU computes (`device_type` is where it trains).

    Raises:
        LorakitError: the model does not support it, or `offload` where it does not train on CUDA.
    """
    if not supports_activation_checkpointing(model):
        raise LorakitError(
            f"{type(model).__name__} does not support activation checkpointing; "
            "run with --gradient-checkpointing off (and a smaller --batch-size if memory is short)"
        )
    if offload:
        check_offload(device_type)
    model.activation_checkpointing_enable({"use_reentrant": False}, offload=offload)
    # The KV cache is never used while training; checkpointed blocks must not write one either.
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False


def check_offload(device_type: str) -> None:
    """Refuse offloading activations where training does not run on a GPU (raises LorakitError)."""
    if device_type != "cuda":
        raise LorakitError(
            f"--offload-activations moves checkpointed activations from a GPU to host memory; this run "
            f"trains on {device_type}, where they are host memory already: drop the flag"
        )


def activation_checkpointing_enabled(model: nn.Module) -> bool:
    """True when any block of `model` is set to checkpoint its activations."""
    return any(getattr(module, "gradient_checkpointing", False) is True for module in model.modules())


@contextlib.contextmanager
def checkpointing_paused(model: nn.Module) -> Iterator[None]:
    """Forwards inside run every block of `model` unchecked (keeping all its activations);
    checkpointing resumes on exit. Blocks read their flag when called, so a backward later
    recomputes exactly the blocks that were checkpointed in their forward."""
    blocks = [module for module in model.modules() if getattr(module, "gradient_checkpointing", False) is True]
    for block in blocks:
        block.gradient_checkpointing = False
    try:
        yield
    finally:
        for block in blocks:
            block.gradient_checkpointing = True
