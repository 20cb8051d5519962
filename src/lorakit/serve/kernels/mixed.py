r"""Mixed-adapter batches: every row of one forward pass runs its own adapter, or none.

    rows:   0 → "a"    1 → None    2 → "b"    3 → "a"          RowPlan (metadata, built once per batch)
                                                                slot = [1, 0, 2, 1]   (0 = the zero slot)
    x : (batch, seq, in)
      ├──► W·x + b                           one base matmul for the whole batch
      └──► A_rows = A[slot] (batch, r_max, in)    B_rows = B[slot] (batch, r_max, out)      gather (BGMV)
           y += (A_rows @ xᵀ)ᵀ @ B_rows      two batched matmuls, the second accumulating into y

    y[i] = W·x[i] + b + s_i · B_i·A_i·x[i]          y[i] = W·x[i] + b  for a row with no adapter

A and B come from the layer's `AdapterSlots` stacks (`lorakit/serve/kernels/slots.py`): adapters packed
by slot, zero-padded to the layer's largest rank, the scaling s_i folded into B, slot 0 all zeros.
A server packs each adapter once, when it loads; without slots the block packs the batch's
adapters itself. Zero padding adds exact zeros, so a row equals its adapter run alone up to the
rounding of the reassociated product. Heads to save (`ModulesToSave`, e.g. a classifier) run once
per group of rows that share an adapter.

How the LoRA term is computed (`lorakit/serve/kernels/bgmv.py`): gathered weights and two batched
matmuls, or for one token per row (decoding) a compiled kernel that reads each row's weights in
place. Not one pair of matmuls per contiguous adapter segment (SGMV-like, rows sorted by adapter):
measured with `benchmarks/serve_mixed.py --kernels` (one CPU thread, r=8), a 32×128 prefill
layer (384→384) took 0.47-0.49 ms gathered in bf16 against 0.48-1.8 ms in segments for 1 to 128
adapters (the base Linear: 5.7 ms), and segments only win a decode step when a few adapters
share the batch.

The LoRA core knows nothing of this: for the duration of the block each wrapper's `forward` is
shadowed by an instance attribute that runs the mixed computation, and removed on exit.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.lora.inject import STATE_ATTRIBUTE, named_wrappers
from lorakit.lora.layer import LoraLinear, ModulesToSave
from lorakit.serve.kernels.bgmv import add_lora_delta_
from lorakit.serve.kernels.slots import ZERO_SLOT, AdapterSlots, PackedLora

_IN_MIXED_MODE = "_lorakit_mixed_rows"


@dataclass(frozen=True)
class RowPlan:
    """Which row uses which adapter: the metadata every layer of one batch consumes.

    rows: the adapter name of each row (None: base model only), length = batch.
    adapters: the distinct adapter names, in order of first appearance.
    slot: (batch,) long; row i's slot in the layers' stacks (0: the zero slot, no adapter).
    groups: (adapter or None, (rows,) long indices) for every adapter the batch uses: heads run per group.
    """

    rows: tuple[str | None, ...]
    adapters: tuple[str, ...]
    slot: torch.Tensor
    groups: tuple[tuple[str | None, torch.Tensor], ...]
    shared_slot: int | None = None  # the slot every row uses, when all rows share one adapter

    @property
    def batch_size(self) -> int:
        """Rows in the batch (every tensor the layers see is (batch_size, ...))."""
        return len(self.rows)


def plan_rows(
    rows: Sequence[str | None], slots: AdapterSlots | None = None, device: torch.device | str = "cpu"
) -> RowPlan:
    """Build the `RowPlan` of a batch whose row i uses adapter `rows[i]` (None: no adapter).

    slots: where the adapters are packed; None numbers them 1, 2, … in order of first appearance,
    as `AdapterSlots.packing(model, plan.adapters)` packs them.
    """
    rows = tuple(rows)
    adapters = tuple(dict.fromkeys(name for name in rows if name is not None))
    slot_of = {name: slots.slot(name) if slots is not None else i + 1 for i, name in enumerate(adapters)}
    slot = torch.tensor([slot_of.get(name, ZERO_SLOT) for name in rows], dtype=torch.long, device=device)
    members: dict[str | None, list[int]] = {}
    for i, name in enumerate(rows):
        members.setdefault(name, []).append(i)
    groups = tuple((name, torch.tensor(ids, dtype=torch.long, device=device)) for name, ids in members.items())
    shared = slot_of[adapters[0]] if len(members) == 1 and adapters else None
    return RowPlan(rows, adapters, slot, groups, shared)


@contextlib.contextmanager
def mixed_adapters(
    model: nn.Module, row_adapters: Sequence[str | None], slots: AdapterSlots | None = None
) -> Iterator[RowPlan]:
    """Run row i of every forward pass inside the block with adapter `row_adapters[i]` (None: base).

    `with mixed_adapters(model, ["a", None, "b"]): logits = model(**batch).logits` gives, in row
    i, what `set_adapter(model, row_adapters[i])` then `model(**batch)` would give in row i. Works
    for any input laid out (batch, ...) and through `model.generate()` with one sequence per row
    (greedy or sampling, with KV cache): beam search and num_return_sequences > 1 change the
    number of rows and are refused at the first forward pass.

    Heads to save whose adapters have different output widths (classifiers with different label
    counts) return the widest width; a row's columns past its own head's width are -inf, so
    softmax gives them probability 0 and `logits[i, :n_labels_i]` are the row's own logits.

    slots: the model's adapters packed once (`AdapterSlots`), as a server keeps them; every row's
    adapter must have a slot. None: the block packs the batch's adapters for itself (their
    current weights; for one batch this costs about what packing at load time saves).

    Inference only: dropout is not applied, so a model in training mode is refused, as is one with
    a merged adapter or one already inside another `mixed_adapters` block.
    """
    state = getattr(model, STATE_ATTRIBUTE, None)
    available = list(state.configs) if state is not None else []
    unknown = sorted({name for name in row_adapters if name is not None and name not in available})
    if unknown:
        raise LorakitError(f"no adapter named {unknown[0]!r} on this model; it has {', '.join(available) or 'none'}")
    if model.training:
        raise LorakitError("mixed_adapters is for inference; call model.eval() first")
    if getattr(model, _IN_MIXED_MODE, None) is not None:
        raise LorakitError("this model is already inside a mixed_adapters block; they cannot nest")
    wrappers = list(named_wrappers(model))
    merged = [m.merged_adapter for _, m in wrappers if isinstance(m, LoraLinear) and m.merged_adapter is not None]
    if merged:
        raise LorakitError(f"adapter {merged[0]!r} is merged into the base weights; unmerge_adapter it first")
    parameter = next(model.parameters(), None)
    plan = plan_rows(row_adapters, slots, parameter.device if parameter is not None else "cpu")
    if slots is None:
        slots = AdapterSlots.packing(model, plan.adapters)
    elif slots.model is not model:
        raise LorakitError("these adapter slots were packed from another model")
    used = {slots.slot(name) for name in plan.adapters}
    forwards = {}
    for path, module in wrappers:
        if isinstance(module, ModulesToSave):
            forwards[module] = functools.partial(_head_forward, module, plan)
        elif isinstance(module, LoraLinear):
            forwards[module] = functools.partial(_lora_forward, module, slots.packed(path, module, used), plan)
    setattr(model, _IN_MIXED_MODE, plan)
    for module, forward in forwards.items():
        module.forward = forward
    try:
        yield plan
    finally:
        for module in forwards:
            del module.forward
        delattr(model, _IN_MIXED_MODE)


def _check_rows(x: torch.Tensor, plan: RowPlan) -> None:
    if x.shape[0] != plan.batch_size:
        raise LorakitError(
            f"mixed_adapters was given {plan.batch_size} rows but the model ran a batch of {x.shape[0]}; "
            "generate one sequence per row (num_beams=1, num_return_sequences=1)"
        )


def _lora_forward(
    layer: LoraLinear, packed: PackedLora | None, plan: RowPlan, x: torch.Tensor, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """`LoraLinear.forward` with per-row adapters: base(x) + s_i · B_i·A_i·x[i]."""
    _check_rows(x, plan)
    result = layer.base_layer(x, *args, **kwargs)
    if packed is None:
        return result
    # As LoraLinear.forward: under autocast the matmuls pick their dtype, otherwise they run in the
    # adapters' dtype (fp32 on a half-precision base) and the sum is cast back.
    if not torch.is_autocast_enabled(x.device.type):
        x = x.to(packed.A.dtype)
    # base(x) is a fresh tensor of this call: adding into it in place is safe.
    return add_lora_delta_(result.contiguous(), x, packed, plan.slot, plan.shared_slot)


def _head_forward(wrapper: ModulesToSave, plan: RowPlan, *args: Any, **kwargs: Any) -> torch.Tensor:
    """`ModulesToSave.forward` with per-row adapters: each group of rows runs its adapter's copy.

    Every tensor argument is taken to be batch-first. Outputs narrower than the widest are padded
    with -inf on the last dimension (see `mixed_adapters`).
    """
    _check_rows(args[0] if args else next(iter(kwargs.values())), plan)
    outputs = []
    copies = dict(wrapper.modules_to_save.items())
    for name, rows in plan.groups:
        module = copies.get(name, wrapper.original_module)
        taken_args = [_take_rows(value, rows, plan) for value in args]
        taken_kwargs = {key: _take_rows(value, rows, plan) for key, value in kwargs.items()}
        output = module(*taken_args, **taken_kwargs)
        if not isinstance(output, torch.Tensor):
            raise LorakitError(
                f"mixed_adapters supports heads to save that return one tensor; {type(module).__name__} "
                f"returns {type(output).__name__}"
            )
        outputs.append((rows, output))
    width = max(output.shape[-1] for _, output in outputs)
    first = outputs[0][1]
    result = first.new_full((plan.batch_size, *first.shape[1:-1], width), float("-inf"))
    for rows, output in outputs:
        result[rows, ..., : output.shape[-1]] = output.to(result.dtype)
    return result


def _take_rows(value: Any, rows: torch.Tensor, plan: RowPlan) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == plan.batch_size:
        return value.index_select(0, rows)
    return value
