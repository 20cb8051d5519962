"""FSDP2 for LoRA: the frozen base and the adapter sharded per transformer block across ranks.

    shard_model(model)              `fully_shard` on every block (the classes transformers never
                                    splits), then on the whole model: each rank keeps 1/N of every
                                    parameter; a block's are gathered just for its forward/backward
    gather_trainable(model, main)   {name: full tensor} of the trainable parameters (the adapter,
                                    a head) on the main rank, {} elsewhere; only those are gathered,
                                    never the frozen base
    shard_from_main(model, main)    shard a model only the main rank loaded (the others built it on
                                    the meta device), scattering its weights tensor by tensor
    load_trainable(model, state)    the main rank's full tensors scattered back into the shards
    sharded_bytes(model)            the frozen bytes this rank holds, and of the whole model
    check_shardable(model, n)       refuse a 4-bit (torchao NF4) weight that does not split in n
    optimizer_state(model, opt)     AdamW's state whole on the main rank, and back from it
    load_optimizer_state(...)
    gradient_sync(model, enabled)   FSDP2's `no_sync`: off between optimizer steps, gradients
                                    accumulate unsharded and are reduce-scattered once

Collectives: every rank must call `shard_from_main`, `gather_trainable` and `load_trainable` at the same
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
            _scatter(parameter, state[name] if main else None)


def shard_from_main(model: nn.Module, main: bool, device: torch.device) -> nn.Module:
    """Shard `model` with only the main rank ever holding whole weights; returns it.

    The main rank built `model` for real (loaded, adapter initialized); the others built the same
    architecture with its parameters on the meta device (no memory) and real buffers. The main rank
    moves its model to meta too, keeping the tensors aside; every rank shards and allocates just its
    1/N slices, and the main rank scatters the tensors one at a time, dropping each once sent: the
    main rank peaks near the loaded model plus one tensor, the others near 1/N of it."""
    import torch.distributed as dist

    ties = [_tied_names(model) if main else None]
    dist.broadcast_object_list(ties, src=0)
    buffers = {name: buffer for name, buffer in model.named_buffers()}
    sources = dict(model.named_parameters()) if main else {}
    if main:
        model.to("meta")  # the module lets go of its tensors; `sources` keeps them
    _tie(model, ties[0])
    shard_model(model)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, buffer in model.named_buffers():  # persistent ones as the main rank loaded them
            buffer.copy_(buffers[name])
            dist.broadcast(buffer, src=0)
        for name, parameter in model.named_parameters():
            _scatter(parameter, sources.pop(name) if main else None)
    rng = [torch.get_rng_state()]  # the main rank's draws (a new head's init) set every rank's state
    dist.broadcast_object_list(rng, src=0)
    torch.set_rng_state(rng[0])
    return model


def _scatter(parameter: DTensor, source: torch.Tensor | None) -> None:
    """Fill this rank's shard of `parameter` from the main rank's full `source` (None elsewhere)."""
    if source is None:
        source = torch.empty(parameter.shape, dtype=parameter.dtype)
    local = distribute_tensor(
        source.to(parameter.to_local().device, parameter.dtype),
        parameter.device_mesh,
        parameter.placements,
        src_data_rank=0,
    )
    parameter.to_local().copy_(local.to_local())


def _tied_names(model: nn.Module) -> list[list[str]]:
    """Groups of parameter names that are one tensor (tied input and output embeddings)."""
    groups: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(parameter), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _tie(model: nn.Module, ties: list[list[str]]) -> None:
    """Make every name of each group in `ties` the first name's parameter."""
    for first, *others in ties:
        parameter = model.get_parameter(first)
        for name in others:
            owner, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(owner), attribute, parameter)


def check_shardable(model: nn.Module, processes: int) -> None:
    """Refuse a 4-bit (torchao NF4) weight FSDP2 cannot split into `processes` equal parts: torchao
    splits its rows together with its packed codes and scale groups, all of which must divide."""
    from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor

    for name, parameter in model.named_parameters():
        data = parameter.data
        if not isinstance(data, NF4Tensor):
            continue
        parts = [data.size(0), *(getattr(data, inner).numel() for inner in NF4_SPLIT_TENSORS)]
        if any(part % processes for part in parts):
            groups = data.quantization_factor.numel()
            raise LorakitError(
                f"--fsdp splits each 4-bit weight into {processes} equal parts, rows and scale groups alike, "
                f"and {name} ({data.size(0)} rows, {groups} scale group{'s' if groups != 1 else ''}) does not "
                f"split into {processes}; launch a number of processes that divides both, or drop --fsdp"
            )


# What torchao splits an NF4 weight's storage into, for FSDP (`nf4_split`).
NF4_SPLIT_TENSORS = ("quantized_scalers", "quantization_factor", "quantized_data")


def sharded_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes this rank holds, bytes of the whole) of the frozen parameters of a sharded `model`;
    a 4-bit weight counts its packed codes and scales."""
    held = whole = 0
    for parameter in model.parameters():
        if parameter.requires_grad:
            continue
        local = parameter.to_local() if isinstance(parameter, DTensor) else parameter
        if hasattr(local, NF4_SPLIT_TENSORS[-1]):  # torchao NF4: numel counts values, not bytes
            local_bytes = sum(getattr(local, inner).nbytes for inner in NF4_SPLIT_TENSORS)
            held += local_bytes
            whole += local_bytes * (parameter.device_mesh.size() if isinstance(parameter, DTensor) else 1)
            continue
        held += local.numel() * local.element_size()
        whole += parameter.numel() * parameter.element_size()
    return held, whole


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
