r"""The LoRA layer and the trainable-copy wrapper.

                      x : (..., in_features)
                 ┌────────┴─────────┐
                 │                  │ dropout
           ┌─────┴─────┐      ┌─────┴─────┐
           │  W (frozen)│      │ A : r × in │  kaiming-uniform (or N(0, 1/r))
           │  out × in  │      └─────┬─────┘
           └─────┬─────┘      ┌─────┴─────┐
                 │            │ B : out × r│  zeros: the adapter starts as a no-op
                 │            └─────┬─────┘
                 │                  │ × scaling = alpha / r   (alpha / sqrt(r) with rsLoRA)
                 └──────── + ───────┘
                      y : (..., out_features)

    y = W·x + b + scaling · B·A·dropout(x)          merged: W' = W + scaling · B·A

Parameter names mirror PEFT's (`base_layer`, `lora_A.<adapter>.weight`,
`modules_to_save.<adapter>`), so the PEFT file format maps onto them by dropping the adapter name.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from lorakit.errors import LorakitError


def init_lora_weights_(lora_A: nn.Linear, lora_B: nn.Linear, mode: bool | str, r: int) -> None:
    """Initialise one adapter's A and B in place, exactly as PEFT does.

    True: A ~ kaiming-uniform(a=sqrt(5)) (nn.Linear's own default), B = 0.
    "gaussian": A ~ N(0, (1/r)^2), B = 0.
    False: leave nn.Linear's random init on both, so the adapter is not a no-op (tests use it).
    A zero B makes `B·A = 0`: training starts exactly at the pretrained model.
    """
    if mode is False:
        return
    if mode is True:
        nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5))
    elif mode == "gaussian":
        nn.init.normal_(lora_A.weight, std=1 / r)
    else:
        raise LorakitError(f"init_lora_weights must be True, False or 'gaussian'; got {mode!r}")
    nn.init.zeros_(lora_B.weight)
    if lora_B.bias is not None:
        nn.init.zeros_(lora_B.bias)


def adapter_dtype(base_weight: torch.Tensor) -> torch.dtype:
    """LoRA weights stay in fp32 on a half-precision or quantised base: they are what trains."""
    if base_weight.dtype.is_floating_point and base_weight.element_size() >= 4:
        return base_weight.dtype
    return torch.float32


def is_quantized_weight(weight: torch.Tensor) -> bool:
    """A packed 4-bit weight (torchao NF4Tensor, bitsandbytes Params4bit) rather than a plain tensor:
    its values cannot take `W + scaling·B·A` in place."""
    return type(weight) not in (torch.Tensor, nn.Parameter)


def linear_features(layer: nn.Linear | Conv1D) -> tuple[int, int]:
    """`(in_features, out_features)`; a Conv1D stores its weight as (in, out)."""
    if isinstance(layer, Conv1D):
        return tuple(layer.weight.shape)
    return layer.in_features, layer.out_features


class LoraLinear(nn.Module):
    """A frozen Linear (or GPT-2 Conv1D) plus any number of named low-rank adapters.

    `forward(x) = base(x) + scaling · B(A(dropout(x)))` for the active adapter; with no active
    adapter, or while the active one is merged into W, it is `base(x)`.

    Shapes: x (..., in_features) → (..., out_features); A (r, in_features); B (out_features, r).
    A Conv1D stores W as (in, out) ("fan_in_fan_out"); only merging needs to know.
    """

    def __init__(self, base_layer: nn.Linear | Conv1D) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        self.in_features, self.out_features = linear_features(base_layer)
        self.lora_A = nn.ModuleDict()
        self.lora_B = nn.ModuleDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.active_adapter: str | None = None
        self.merged_adapter: str | None = None

    @property
    def weight(self) -> torch.Tensor:
        """The base weight: code that reads `layer.weight` (dtype checks, tying) keeps working."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The base layer's bias."""
        return self.base_layer.bias

    def add_adapter(
        self, name: str, r: int, scaling: float, dropout: float, init: bool | str, lora_bias: bool = False
    ) -> None:
        """Create adapter `name`: A (r × in), B (out × r), on the base layer's device."""
        lora_A = nn.Linear(self.in_features, r, bias=False)
        lora_B = nn.Linear(r, self.out_features, bias=lora_bias)
        init_lora_weights_(lora_A, lora_B, init, r)
        weight = self.base_layer.weight
        self.lora_A[name] = lora_A.to(weight.device, adapter_dtype(weight))
        self.lora_B[name] = lora_B.to(weight.device, adapter_dtype(weight))
        self.lora_dropout[name] = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.scaling[name] = scaling

    def delete_adapter(self, name: str) -> None:
        """Remove adapter `name` (unmerging it first if it is merged in)."""
        if self.merged_adapter == name:
            self.unmerge()
        for store in (self.lora_A, self.lora_B, self.lora_dropout):
            del store[name]
        del self.scaling[name]
        if self.active_adapter == name:
            self.active_adapter = None

    def rank(self, name: str) -> int:
        """The rank r of adapter `name`."""
        return self.lora_A[name].weight.shape[0]

    def delta_weight(self, name: str) -> torch.Tensor:
        """`scaling · B·A` laid out like the base weight: (out, in), or (in, out) for Conv1D."""
        lora_A, lora_B = self.lora_A[name].weight, self.lora_B[name].weight
        delta = lora_B.float() @ lora_A.float()
        if self.fan_in_fan_out:
            delta = delta.T
        return delta * self.scaling[name]

    def merge(self, name: str) -> None:
        """Add adapter `name` into the base weight (idempotent for the adapter already merged)."""
        if self.merged_adapter == name:
            return
        if self.merged_adapter is not None:
            raise LorakitError(f"adapter {self.merged_adapter!r} is merged; unmerge it before merging {name!r}")
        weight = self.base_layer.weight
        # QLoRA: rounding W + B·A back to 4 bits would lose most of B·A; the merge path is
        # dequantize (the weights the adapter was trained against), then merge.
        if is_quantized_weight(weight):
            raise LorakitError(
                f"cannot merge adapter {name!r} into a 4-bit quantized base layer; "
                "call lorakit.quant.dequantize_model(model, dtype) first, then merge"
            )
        weight.data += self.delta_weight(name).to(weight.dtype)
        if self.lora_B[name].bias is not None:
            self._merge_bias(name, sign=1.0)
        self.merged_adapter = name

    def unmerge(self) -> None:
        """Subtract the merged adapter from the base weight again (no-op when none is merged)."""
        name = self.merged_adapter
        if name is None:
            return
        weight = self.base_layer.weight
        weight.data -= self.delta_weight(name).to(weight.dtype)
        if self.lora_B[name].bias is not None:
            self._merge_bias(name, sign=-1.0)
        self.merged_adapter = None

    def _merge_bias(self, name: str, sign: float) -> None:
        if self.base_layer.bias is None:
            raise LorakitError(f"adapter {name!r} has lora_bias but the base layer has no bias to merge it into")
        self.base_layer.bias.data += sign * self.lora_B[name].bias.to(self.base_layer.bias.dtype) * self.scaling[name]

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """x (..., in) → base(x) + scaling · B·A·dropout(x) for the active adapter, (..., out)."""
        result = self.base_layer(x, *args, **kwargs)
        name = self.active_adapter
        if name is None or name == self.merged_adapter or name not in self.lora_A:
            return result
        lora_A, lora_B = self.lora_A[name], self.lora_B[name]
        # Under autocast the matmuls pick their own dtype: casting x first would only copy it.
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(lora_A.weight.dtype)
        update = lora_B(lora_A(self.lora_dropout[name](x)))
        return (result + update * self.scaling[name]).to(result.dtype)

    def extra_repr(self) -> str:
        """Shapes and each adapter's rank, for `print(model)`."""
        ranks = {name: self.rank(name) for name in self.lora_A}
        return f"in_features={self.in_features}, out_features={self.out_features}, adapters={ranks}"


class ModulesToSave(nn.Module):
    """Keeps the original module frozen and one trainable copy per adapter (e.g. a new head).

    Forward runs the active adapter's copy, or the original when no adapter is active.
    """

    def __init__(self, original_module: nn.Module) -> None:
        super().__init__()
        self.original_module = original_module
        self.modules_to_save = nn.ModuleDict()
        self.active_adapter: str | None = None

    def add_adapter(self, name: str) -> None:
        """A trainable copy of the original module for adapter `name`."""
        self.modules_to_save[name] = copy.deepcopy(self.original_module)

    def delete_adapter(self, name: str) -> None:
        """Remove adapter `name`'s copy."""
        del self.modules_to_save[name]
        if self.active_adapter == name:
            self.active_adapter = None

    @property
    def active_module(self) -> nn.Module:
        """The copy of the active adapter, or the original module when none is active."""
        if self.active_adapter is not None and self.active_adapter in self.modules_to_save:
            return self.modules_to_save[self.active_adapter]
        return self.original_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the active module."""
        return self.active_module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Model code reads attributes of its head (`classifier.weight`, `out_features`): answer
        # from the module that runs.
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        modules = self.__dict__["_modules"]
        active = self.__dict__.get("active_adapter")
        saved = modules["modules_to_save"]
        module = saved[active] if active is not None and active in saved else modules["original_module"]
        return getattr(module, name)
