"""What one batch of requests runs with, whatever its task: the model, its adapters, the forward pass.

    Engine._run_batch ──► registry.hold(adapters) ──► Batch(model, tokenizer, held, autocast, slots)
                                                        ├─ adapter_of(request): its AdapterInfo, or its error
                                                        └─ forward(rows): no_grad · autocast · mixed_adapters

`classify.run_classification` takes a `Batch` and its requests (generation runs in the scheduler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from lorakit.errors import LorakitError
from lorakit.serve.engine.adapters import AdapterInfo
from lorakit.serve.engine.batcher import Request
from lorakit.serve.kernels.mixed import mixed_adapters
from lorakit.serve.kernels.slots import AdapterSlots


@dataclass(frozen=True)
class Batch:
    """One batch's setting, held by the worker thread while the batch runs.

    model / tokenizer: the shared base model (eval mode, carrying the adapters) and its tokenizer.
    held: adapter name → its `AdapterInfo`, or the LorakitError that loading it raised
        (`AdapterRegistry.hold`); only the requests for that adapter fail.
    autocast: the batch's autocast context (bf16, or a null context), entered once by `forward`.
    slots: the adapters packed for mixed batches (None: `mixed_adapters` packs the batch's own).
    """

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    held: dict[str, AdapterInfo | LorakitError]
    autocast: contextlib.AbstractContextManager
    slots: AdapterSlots | None = None

    @property
    def device(self) -> torch.device:
        """Where the model's weights, and so the batch's tensors, live."""
        return next(self.model.parameters()).device

    def adapter_of(self, request: Request) -> AdapterInfo | None:
        """The adapter `request` runs with (None: the base model).

        Raises:
            LorakitError: the adapter could not be loaded (the error loading it raised).
        """
        if request.adapter is None:
            return None
        info = self.held[request.adapter]
        if isinstance(info, LorakitError):
            raise info
        return info

    @contextlib.contextmanager
    def forward(self, rows: Sequence[AdapterInfo | None]) -> Iterator[None]:
        """Run the block's forward passes without gradients, under the autocast, with row i on
        adapter `rows[i]` (None: the base), as `mixed_adapters` does."""
        names = [info.model_name if info is not None else None for info in rows]
        with torch.no_grad(), self.autocast, mixed_adapters(self.model, names, self.slots):
            yield
