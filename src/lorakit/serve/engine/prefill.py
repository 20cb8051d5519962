"""Chunked prefill: a group of new rows' prompts run through the model a few columns at a time,
between decode steps, so a long prompt never stalls the running rows for more than one chunk.

    ids   (rows, width)  the group's prompts, left-padded to its longest
    mask  (rows, width)  1 where a position holds a prompt token
    chunk                the next columns [done, done + columns); columns = max(1, budget // rows),
                         so a chunk computes about `budget` tokens whatever the group's size

Each chunk extends the group's own KV cache; the last chunk's last position gives every row its
first token, and the group joins the running batch (`Decoder._splice`). A group whose prompts
fit one chunk is prefilled at once, as without chunking.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from lorakit.serve.engine.kv_cache import slack_cache


class Prefill:
    """One group of rows being prefilled: its padded prompts, mask, positions and KV cache.

    rows: objects with `prompt_ids` (list[int]), in the group's order. pad_id fills the left of
    shorter prompts; `config` is the model's (for its cache layers).
    """

    def __init__(self, rows: Sequence, pad_id: int, config: object, device: torch.device) -> None:
        width = max(len(row.prompt_ids) for row in rows)
        self.rows = list(rows)
        self.ids = torch.tensor([[pad_id] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows], device=device)
        self.mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows])
        self.mask = self.mask.to(device)
        self.positions = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.cache: DynamicCache = slack_cache(config)
        self.done = 0  # columns prefilled

    @property
    def finished(self) -> bool:
        """Whether every column is prefilled (the last chunk's logits give the first tokens)."""
        return self.done == self.ids.shape[1]

    def chunk(self, budget: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The next chunk's (ids, mask so far, positions), about `budget` tokens; marks it done."""
        end = min(self.ids.shape[1], self.done + max(1, budget // len(self.rows)))
        start, self.done = self.done, end
        return self.ids[:, start:end], self.mask[:, :end], self.positions[:, start:end]

    def drop(self, leaving: set[int]) -> None:
        """Take the rows whose `id()` is in `leaving` out of the group (and its cache)."""
        kept = [i for i, row in enumerate(self.rows) if id(row) not in leaving]
        if len(kept) == len(self.rows):
            return
        index = torch.tensor(kept, dtype=torch.long, device=self.ids.device)
        self.rows = [self.rows[i] for i in kept]
        self.ids, self.mask, self.positions = self.ids[index], self.mask[index], self.positions[index]
        for layer in self.cache.layers:
            if layer.keys is not None:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
