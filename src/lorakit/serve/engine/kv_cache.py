"""A KV cache that grows in place: each decode step writes its new keys and values into room kept
at the end, instead of copying the whole cache into a new tensor.

transformers' `DynamicLayer` concatenates at every step: for a decode batch of 16 rows over 300
positions that copies every layer's whole cache each token, about 30 % of a SmolLM2-135M step on
CPU (see BENCHMARKS.md). `SlackLayer` keeps a buffer with room for more positions and hands the
model views of its filled part; it copies only when the room runs out (doubling it, so the copies
amortise to O(1) per token).

    buffer  (rows, heads, capacity, head_dim)     keys/values = buffer[:, :, :length]

Assigning `layer.keys` / `layer.values` (as the decoders do when rows join or leave) replaces the
buffer with the tensor given, filled to its length; the next step makes room again.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

_MIN_ROOM = 64  # positions of room a buffer gets at least when it grows


class _Slack:
    """One growing tensor (rows, heads, capacity, head_dim), filled to `length` positions."""

    def __init__(self, tensor: torch.Tensor | None = None) -> None:
        self.buffer = tensor
        self.length = 0 if tensor is None else tensor.shape[-2]

    @property
    def filled(self) -> torch.Tensor | None:
        """The filled positions: a view of the buffer."""
        return None if self.buffer is None else self.buffer[:, :, : self.length]

    def append(self, states: torch.Tensor) -> torch.Tensor:
        """Write `states` (rows, heads, new, head_dim) after the filled positions, growing the
        buffer (to twice what is needed, at least `_MIN_ROOM` more) when it is full; the filled view."""
        end = self.length + states.shape[-2]
        if self.buffer is None or end > self.buffer.shape[-2]:
            rows, heads, _, width = states.shape
            grown = states.new_empty(rows, heads, end + max(end, _MIN_ROOM), width)
            if self.buffer is not None:
                grown[:, :, : self.length] = self.filled
            self.buffer = grown
        self.buffer[:, :, self.length : end] = states
        self.length = end
        return self.filled


class SlackLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views of buffers with room to grow."""

    def __init__(self) -> None:
        self._keys, self._values = _Slack(), _Slack()
        super().__init__()

    @property
    def keys(self) -> torch.Tensor | None:
        """The cached keys (rows, heads, length, head_dim): a view of their buffer."""
        return self._keys.filled

    @keys.setter
    def keys(self, tensor: torch.Tensor | None) -> None:
        """Replace the cached keys with `tensor` (None: nothing cached); the next step makes room."""
        self._keys = _Slack(_cached(tensor))

    @property
    def values(self) -> torch.Tensor | None:
        """The cached values (rows, heads, length, head_dim): a view of their buffer."""
        return self._values.filled

    @values.setter
    def values(self, tensor: torch.Tensor | None) -> None:
        """Replace the cached values with `tensor` (None: nothing cached); the next step makes room."""
        self._values = _Slack(_cached(tensor))

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Note the device; the buffers come with the first `update`."""
        self.device = key_states.device
        self.is_initialized = True

    def get_seq_length(self) -> int:
        """Positions cached (0 when nothing is)."""
        return self._keys.length

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions' keys and values (rows, heads, new, head_dim) after the cached
        ones; returns all of them (views)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self._keys.append(key_states), self._values.append(value_states)


def _cached(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """`tensor` as a layer's cache, None for nothing cached (also DynamicLayer's empty placeholder)."""
    return None if tensor is None or tensor.dim() < 3 else tensor


def slack_cache(config: object) -> DynamicCache:
    """A `DynamicCache` for `config`'s model whose full-attention layers are `SlackLayer`s (sliding
    window layers keep their own kind)."""
    cache = DynamicCache(config=config)
    cache.layers = [SlackLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
