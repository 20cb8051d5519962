"""FSDP2 for LoRA: the frozen base and the adapter sharded per transformer block across ranks.

    shard_model(model)              `fully_shard` on every block (the classes transformers never
                                    splits), then on the whole model: each rank keeps 1/N of every
                                    parameter; a block's are gathered just for its forward/backward
    gather_trainable(model, main)   {name: full tensor} of the trainable parameters (the adapter,
                                    a head) on the main rank, {} elsewhere; only those are gathered,
                                    never the frozen base
    load_trainable(model, state)    the main rank's full tensors scattered back into the shards
    optimizer_state(model, opt)     AdamW's state whole on the main rank, and back from it
    load_optimizer_state(...)
    gradient_sync(model, enabled)   FSDP2's `no_sync`: off between optimizer steps, gradients
                                    accumulate unsharded and are reduce-scattered once

Collectives: every rank must call `shard_model`, `gather_trainable` and `load_trainable` at the same
point, in the same order. torch's own FSDP2 (`torch.distributed.fsdp`), on gloo (CPU) or NCCL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from lorakit.errors import LorakitError


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks to shard one by one, innermost first: modules of the classes the model declares
    unsplittable (`_no_split_modules`: LlamaDecoderLayer; BertLayer and BertEmbeddings; T5Block)."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    # Innermost first: a block inside another block must be sharded before its parent.
    blocks = [module for module in reversed(list(model.modules())) if type(module).__name__ in names]
    if not blocks:
        raise LorakitError(
            f"{type(model).__name__} names no transformer blocks to shard (_no_split_modules); run without --fsdp"
        )
    return blocks


def shard_model(model: nn.Module) -> nn.Module:
    """Shard `model` in place with FSDP2, block by block, then the rest (embeddings, head) as
    one group; returns it."""
    for block in transformer_blocks(model):
        fully_shard(block)
    fully_shard(model)
    return model


def is_sharded(model: nn.Module) -> bool:
    """Whether `shard_model` sharded `model`."""
    return isinstance(model, FSDPModule)


def gather_trainable(model: nn.Module, main: bool) -> dict[str, torch.Tensor]:
    """Full CPU copies of the trainable parameters on the `main` rank ({} on the others)."""
    full = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        tensor = parameter.full_tensor() if isinstance(parameter, DTensor) else parameter
        if main:
            full[name] = tensor.detach().cpu().contiguous()
    return full


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor], main: bool) -> None:
    """Copy the `main` rank's full tensors in `state` into the trainable parameters' shards (the
    other ranks pass {}: the values come from the main rank)."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not parameter.requires_grad:
                continue
            if not isinstance(parameter, DTensor):
                raise LorakitError(f"{name} is not sharded: load_trainable expects a model from shard_model")
            source = state[name] if main else torch.empty(parameter.shape, dtype=parameter.dtype)
            local = distribute_tensor(
                source.to(parameter.to_local().device, parameter.dtype),
                parameter.device_mesh,
                parameter.placements,
                src_data_rank=0,
            )
            parameter.to_local().copy_(local.to_local())


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's state as one process would hold it: gathered whole on the main rank (rank
    0; {} elsewhere) for a sharded model, else its own `state_dict()`."""
    if not is_sharded(model):
        return optimizer.state_dict()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(model, optimizer, options=options)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore what `optimizer_state` returned (for a sharded model: rank 0's, sent to every rank)."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=state, options=options)


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Within: gradients are reduce-scattered after backward (`enabled`) or kept unsharded on each
    rank to accumulate (not `enabled`). A model that is not sharded is left alone."""
    if not is_sharded(model) or enabled:
        yield
        return
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
