r"""Adapter slots: every adapter of a model packed once, per layer, for mixed-adapter batches.

    slot     0      1       2       3     …        one stack per LoRA layer (S-LoRA's unified
    A     [zeros | A_a  | A_b    | zeros]          adapter memory, in miniature):
    B     [zeros | s·B_a| s·B_b  | zeros]            A: (capacity + 1, r_max, in)
                                                     B: (capacity + 1, r_max, out), scaling folded in

A batch's rows index the stacks by slot (`mixed.add_lora_delta_`), so nothing is copied per batch:
packing happens when an adapter is added (a server: when it loads), not for every batch. Slot 0 is
all zeros, for rows that use no adapter and for layers an adapter does not target. Ranks differ
freely: each adapter is zero-padded to the layer's largest rank (zeros add exact zeros).

The stacks are a snapshot: an adapter trained further after `add` must be added again. Without
explicit slots `mixed_adapters` packs the batch's adapters into fresh slots for its block.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.lora.inject import STATE_ATTRIBUTE, named_wrappers
from lorakit.lora.layer import LoraLinear

ZERO_SLOT = 0


@dataclass(frozen=True)
class PackedLora:
    """One layer's stacks, ready for `mixed.add_lora_delta_`.

    A: (slots, r_max, in) — lora_A, zero-padded to r_max; slot 0 is zero.
    B: (slots, r_max, out) — scaling · lora_Bᵀ, zero-padded likewise.
    bias: (slots, out) — scaling · lora_B.bias, or None when no adapter here has one.
    """

    A: torch.Tensor
    B: torch.Tensor
    bias: torch.Tensor | None


@dataclass
class _LayerStack:
    layer: LoraLinear  # the wrapper it was packed from: a re-wrapped layer would be a stale match
    packed: PackedLora
    members: set[int] = field(default_factory=set)


class AdapterSlots:
    """The packed adapters of `model`, by slot: `add` packs an adapter, `remove` frees its slot.

    Args:
        model: a model carrying lorakit adapters.
        dtype: the stacks' dtype; None keeps each layer's adapter dtype. A server running under
            bf16 autocast packs in bf16, so that no batch casts the adapters again.
        capacity: slots allocated up front; stacks double when full.
    """

    def __init__(self, model: nn.Module, *, dtype: torch.dtype | None = None, capacity: int = 8) -> None:
        if capacity < 1:
            raise LorakitError(f"capacity must be at least 1; got {capacity}")
        self.model = model
        self.dtype = dtype
        self.capacity = capacity
        self._slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._layers: dict[str, _LayerStack] = {}

    @classmethod
    def packing(cls, model: nn.Module, names: Iterable[str]) -> AdapterSlots:
        """Fresh slots holding `names`, in order (slot 1, 2, …): what one mixed block packs for itself."""
        names = list(names)
        slots = cls(model, capacity=max(len(names), 1))
        slots.add(*names)
        return slots

    def __contains__(self, name: object) -> bool:
        """Whether adapter `name` is packed."""
        return name in self._slot_of

    def __len__(self) -> int:
        """How many adapters are packed."""
        return len(self._slot_of)

    @property
    def names(self) -> tuple[str, ...]:
        """The packed adapters, in the order they were added."""
        return tuple(self._slot_of)

    def slot(self, name: str) -> int:
        """The slot of adapter `name` (0: no adapter)."""
        try:
            return self._slot_of[name]
        except KeyError:
            raise LorakitError(
                f"adapter {name!r} has no slot; packed: {', '.join(self._slot_of) or 'none'} (add it first)"
            ) from None

    def add(self, *names: str) -> list[int]:
        """Pack adapters `names` of every LoRA layer, each into a free slot; return their slots.

        Adding a packed adapter again re-packs it in place (its current weights).
        """
        names = tuple(dict.fromkeys(names))
        state = getattr(self.model, STATE_ATTRIBUTE, None)
        for name in names:
            if state is None or name not in state.configs:
                available = ", ".join(state.configs) if state is not None else "none"
                raise LorakitError(f"no adapter named {name!r} on this model; it has {available}")
        for name in names:
            if name in self._slot_of:
                self.remove(name)
        for name in names:
            if self._free:
                slot = min(self._free)
                self._free.remove(slot)
            else:
                slot = len(self._slot_of) + 1
            self._slot_of[name] = slot
        layers = [(path, layer) for path, layer in named_wrappers(self.model) if isinstance(layer, LoraLinear)]
        with torch.no_grad():
            for name in names:
                for path, layer in layers:
                    if name in layer.lora_A:
                        self._write(path, layer, name, self._slot_of[name])
            top = self._top_slot()
            for stack in self._layers.values():  # every stack holds every slot: rows index them all
                _grow(stack, top)
        return [self._slot_of[name] for name in names]

    def remove(self, name: str) -> None:
        """Zero adapter `name`'s slot in every stack and free it; a stack left empty is dropped."""
        slot = self.slot(name)
        for path, stack in list(self._layers.items()):
            if slot in stack.members:
                stack.members.discard(slot)
                for tensor in _tensors(stack.packed):
                    tensor[slot] = 0
                if not stack.members:
                    del self._layers[path]
        del self._slot_of[name]
        self._free.append(slot)

    def packed(self, path: str, layer: LoraLinear, used: Collection[int] | None = None) -> PackedLora | None:
        """The stacks of the LoRA layer at `path`; None when no packed adapter (of the slots in
        `used`, if given) targets it, so a batch skips the layer's LoRA term."""
        stack = self._layers.get(path)
        if stack is None or (used is not None and stack.members.isdisjoint(used)):
            return None
        if stack.layer is not layer:
            raise LorakitError(
                f"adapter slots are out of date: layer {path} was replaced after its adapters were packed; "
                "add the adapters again"
            )
        return stack.packed

    def slot_nbytes(self, name: str) -> int:
        """Bytes of adapter `name`'s rows in the stacks (its share of them, rank padding included)."""
        slot = self.slot(name)
        return sum(
            tensor[slot].numel() * tensor.element_size()
            for stack in self._layers.values()
            if slot in stack.members
            for tensor in _tensors(stack.packed)
        )

    def nbytes(self) -> int:
        """Bytes held by the stacks (all slots, padding included)."""
        tensors = [tensor for stack in self._layers.values() for tensor in _tensors(stack.packed)]
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    def _write(self, path: str, layer: LoraLinear, name: str, slot: int) -> None:
        A, B = layer.lora_A[name].weight, layer.lora_B[name].weight
        bias = layer.lora_B[name].bias
        scaling = layer.scaling[name]
        stack = self._fit(path, layer, slot, A.shape[0], bias is not None, A)
        r = A.shape[0]
        packed = stack.packed
        # The slot's rows are zero (fresh stacks are, and `remove` zeroes what it frees): only the
        # adapter's own rows are written.
        packed.A[slot, :r].copy_(A)
        packed.B[slot, :r].copy_(B.T).mul_(scaling)
        if packed.bias is not None and bias is not None:
            packed.bias[slot].copy_(bias).mul_(scaling)
        stack.members.add(slot)

    def _fit(self, path: str, layer: LoraLinear, slot: int, rank: int, bias: bool, like: torch.Tensor) -> _LayerStack:
        """The layer's stack, created or grown to take `slot` with this rank and bias."""
        stack = self._layers.get(path)
        if stack is not None and stack.layer is not layer:  # re-wrapped since: its old slots are gone
            del self._layers[path]
            stack = None
        if stack is None:
            slots, dtype = max(self.capacity, self._top_slot()) + 1, self.dtype or like.dtype
            packed = PackedLora(
                A=like.new_zeros(slots, rank, layer.in_features, dtype=dtype),
                B=like.new_zeros(slots, rank, layer.out_features, dtype=dtype),
                bias=like.new_zeros(slots, layer.out_features, dtype=dtype) if bias else None,
            )
            stack = self._layers[path] = _LayerStack(layer, packed)
        else:
            _grow(stack, slot, rank, bias)
        return stack

    def _top_slot(self) -> int:
        return max(self._slot_of.values(), default=0)


def _tensors(packed: PackedLora) -> list[torch.Tensor]:
    return [tensor for tensor in (packed.A, packed.B, packed.bias) if tensor is not None]


def _grow(stack: _LayerStack, slot: int, rank: int = 0, bias: bool = False) -> None:
    """Reallocate `stack` if it lacks `slot`, `rank` or a bias: slots double, one copy per growth."""
    old = stack.packed
    slots, r_max = old.A.shape[0], old.A.shape[1]
    if slot < slots and rank <= r_max and (old.bias is not None or not bias):
        return
    new_slots = slots if slot < slots else max(2 * (slots - 1), slot) + 1
    new_rank = max(r_max, rank)
    A = old.A.new_zeros(new_slots, new_rank, old.A.shape[2])
    B = old.B.new_zeros(new_slots, new_rank, old.B.shape[2])
    A[:slots, :r_max] = old.A
    B[:slots, :r_max] = old.B
    new_bias = None
    if old.bias is not None or bias:
        new_bias = old.B.new_zeros(new_slots, old.B.shape[2])
        if old.bias is not None:
            new_bias[:slots] = old.bias
    stack.packed = PackedLora(A, B, new_bias)
