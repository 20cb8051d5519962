r"""Mixed-adapter batches: every row of one forward pass runs its own adapter, or none.

    rows:   0 → "a"    1 → None    2 → "b"    3 → "a"          RowPlan (metadata, built once per batch)
                                                                slot = [0, 2, 1, 0]   (2 = the zero slot)
    x : (batch, seq, in)
      ├──► W·x + b                           one base matmul for the whole batch
      └──► A_rows = A[slot] (batch, r_max, in)    B_rows = B[slot] (batch, r_max, out)      gather (BGMV)
           y += (A_rows @ xᵀ)ᵀ @ B_rows      two batched matmuls, the second accumulating into y

    y[i] = W·x[i] + b + s_i · B_i·A_i·x[i]          y[i] = W·x[i] + b  for a row with no adapter

Per layer, the batch's adapters are packed once per `mixed_adapters` block (`PackedLora`): A and B
zero-padded to the largest rank of the batch, the scaling s_i folded into B, plus a zero slot for
rows without an adapter. Zero padding adds exact zeros, so a row equals its adapter run alone up
to the rounding of the reassociated product. Heads to save (`ModulesToSave`, e.g. a classifier)
run once per group of rows that share an adapter.

Why gather + `bmm` (BGMV) rather than a pair of matmuls per contiguous adapter segment (SGMV-like,
rows sorted by adapter): measured with `benchmarks/serve_mixed.py --kernels` (one CPU thread, r=8;
benchmarks/results-serve.json, "kernels_us"), the LoRA term of a 32×128×384 prefill layer took
1.7-2.2 ms with BGMV and 2.4-3.2 ms with segments for 1, 8 or 32 adapters (the base Linear: 25
ms); for a 32×1×576 decode step, 153/153/234 µs against 20/160/506 µs. Segments win only for
decoding with one adapter, by ~0.13 ms per layer (~2 % of a SmolLM2 decode step); one code
path is kept.

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
from lorakit.lora.inject import STATE_ATTRIBUTE
from lorakit.lora.layer import LoraLinear, ModulesToSave

_IN_MIXED_MODE = "_lorakit_mixed_rows"


@dataclass(frozen=True)
class RowPlan:
    """Which row uses which adapter: the metadata every layer of one batch consumes.

    rows: the adapter name of each row (None: base model only), length = batch.
    adapters: the distinct adapter names, in order of first appearance.
    slot: (batch,) long; row i uses `adapters[slot[i]]`, or the zero slot `len(adapters)`.
    groups: (adapter or None, (rows,) long indices) for every adapter the batch uses: heads run per group.
    """

    rows: tuple[str | None, ...]
    adapters: tuple[str, ...]
    slot: torch.Tensor
    groups: tuple[tuple[str | None, torch.Tensor], ...]

    @property
    def batch_size(self) -> int:
        return len(self.rows)


def plan_rows(rows: Sequence[str | None], device: torch.device | str = "cpu") -> RowPlan:
    """Build the `RowPlan` of a batch whose row i uses adapter `rows[i]` (None: no adapter)."""
    rows = tuple(rows)
    adapters = tuple(dict.fromkeys(name for name in rows if name is not None))
    position = {name: i for i, name in enumerate(adapters)}
    slot = torch.tensor([position.get(name, len(adapters)) for name in rows], dtype=torch.long, device=device)
    members: dict[str | None, list[int]] = {}
    for i, name in enumerate(rows):
        members.setdefault(name, []).append(i)
    groups = tuple((name, torch.tensor(ids, dtype=torch.long, device=device)) for name, ids in members.items())
    return RowPlan(rows, adapters, slot, groups)


@dataclass(frozen=True)
class PackedLora:
    """One layer's adapters for one batch, ready for `add_lora_delta_`.

    A: (n + 1, r_max, in) — the adapters' lora_A, zero-padded to r_max; slot n is zero.
    B: (n + 1, r_max, out) — scaling · lora_Bᵀ, zero-padded likewise.
    bias: (n + 1, out) — scaling · lora_B.bias, or None when no adapter of the batch has one.
    """

    A: torch.Tensor
    B: torch.Tensor
    bias: torch.Tensor | None


def pack_layer(layer: LoraLinear, adapters: Sequence[str]) -> PackedLora | None:
    """Pack `adapters` of `layer` (those it lacks get zeros); None when it has none of them.

    One `torch.stack` per tensor rather than a copy per adapter: packing runs once per batch for
    every LoRA layer, so its Python overhead counts.
    """
    present = [name for name in adapters if name in layer.lora_A]
    if not present:
        return None
    r_max = max(layer.rank(name) for name in present)
    reference = layer.lora_A[present[0]].weight
    with torch.no_grad():
        A = _stacked([layer.lora_A[n].weight if n in layer.lora_A else None for n in adapters], r_max, reference)
        B = _stacked([layer.lora_B[n].weight.T if n in layer.lora_B else None for n in adapters], r_max, reference)
        scaling = torch.tensor([layer.scaling.get(n, 0.0) for n in adapters] + [0.0], dtype=B.dtype, device=B.device)
        B.mul_(scaling.view(-1, 1, 1))
        bias = None
        biases = [layer.lora_B[n].bias if n in layer.lora_B else None for n in adapters]
        if any(b is not None for b in biases):
            zero = reference.new_zeros(layer.out_features)
            bias = torch.stack([zero if b is None else b for b in biases] + [zero]) * scaling.view(-1, 1)
    return PackedLora(A, B, bias)


def _stacked(weights: list[torch.Tensor | None], r_max: int, like: torch.Tensor) -> torch.Tensor:
    """(n + 1, r_max, features) from n (r, features) weights: zero-padded to r_max, None and slot n zero."""
    features = next(w for w in weights if w is not None).shape[1]
    zero = like.new_zeros(r_max, features)
    padded = [
        zero if w is None else w if w.shape[0] == r_max else nn.functional.pad(w, (0, 0, 0, r_max - w.shape[0]))
        for w in weights
    ]
    return torch.stack([*padded, zero])


def add_lora_delta_(result: torch.Tensor, x: torch.Tensor, packed: PackedLora, slot: torch.Tensor) -> torch.Tensor:
    """result[i] += s_i · B_i·A_i·x[i] in place, for x (batch, ..., in), result (batch, ..., out).

    Two batched matmuls on the weights gathered per row (BGMV); the zero slot adds exact zeros.
    `A_rows @ xᵀ` (batch, r, L) runs along both operands' contiguous axes (0.5 ms on one CPU thread
    for 32×128×384, r=8, where `x @ A_rowsᵀ` took 1.9 ms), and the second product accumulates
    straight into `result` (`baddbmm_`) instead of filling a new (batch, L, out) tensor, whose
    fresh allocation alone costs page faults.
    """
    batch = x.shape[0]
    flat = x.reshape(batch, -1, x.shape[-1])
    low = torch.bmm(packed.A.index_select(0, slot), flat.transpose(1, 2)).transpose(1, 2)  # (batch, L, r)
    up = packed.B.index_select(0, slot)
    out = result.view(batch, -1, result.shape[-1])
    if low.dtype == out.dtype:
        out.baddbmm_(low, up.to(out.dtype))
    else:  # fp32 adapters on a half-precision base: the update is summed in fp32, as LoraLinear does
        out.add_(torch.bmm(low, up))
    if packed.bias is not None:
        out.add_(packed.bias.index_select(0, slot).unsqueeze(1))
    return result


@contextlib.contextmanager
def mixed_adapters(model: nn.Module, row_adapters: Sequence[str | None]) -> Iterator[RowPlan]:
    """Run row i of every forward pass inside the block with adapter `row_adapters[i]` (None: base).

    `with mixed_adapters(model, ["a", None, "b"]): logits = model(**batch).logits` gives, in row
    i, what `set_adapter(model, row_adapters[i])` then `model(**batch)` would give in row i. Works
    for any input laid out (batch, ...) and through `model.generate()` with one sequence per row
    (greedy or sampling, with KV cache): beam search and num_return_sequences > 1 change the
    number of rows and are refused at the first forward pass.

    Heads to save whose adapters have different output widths (classifiers with different label
    counts) return the widest width; a row's columns past its own head's width are -inf, so
    softmax gives them probability 0 and `logits[i, :n_labels_i]` are the row's own logits.

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
    wrappers = [m for m in model.modules() if isinstance(m, (LoraLinear, ModulesToSave))]
    merged = [m.merged_adapter for m in wrappers if isinstance(m, LoraLinear) and m.merged_adapter is not None]
    if merged:
        raise LorakitError(f"adapter {merged[0]!r} is merged into the base weights; unmerge_adapter it first")
    parameter = next(model.parameters(), None)
    plan = plan_rows(row_adapters, parameter.device if parameter is not None else "cpu")
    with torch.no_grad():
        forwards = {module: _mixed_forward(module, plan) for module in wrappers}
    setattr(model, _IN_MIXED_MODE, plan)
    for module, forward in forwards.items():
        module.forward = forward
    try:
        yield plan
    finally:
        for module in forwards:
            del module.forward
        delattr(model, _IN_MIXED_MODE)


def _mixed_forward(module: LoraLinear | ModulesToSave, plan: RowPlan) -> Any:
    if isinstance(module, ModulesToSave):
        return functools.partial(_head_forward, module, plan)
    return functools.partial(_lora_forward, module, pack_layer(module, plan.adapters), plan)


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
    return add_lora_delta_(result.contiguous(), x, packed, plan.slot)


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
