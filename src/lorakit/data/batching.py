"""From a split to padded batches: tokenize without padding, group similar lengths, pad per batch.

Padding every example to `max_length` wastes compute on pad tokens; padding each batch to its
longest example wastes less, and grouping examples of similar length into batches wastes almost
none. A typical pipeline::

    features = tokenize_split(tokenizer, data.train, max_length=256)
    sampler = LengthGroupedSampler([len(f["input_ids"]) for f in features], batch_size=16, seed=42)
    loader = DataLoader(features, batch_size=16, sampler=sampler, collate_fn=pad_collate(tokenizer))
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for batch in loader: ...   # input_ids, attention_mask: (16, longest in batch); labels: (16,)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Sampler

from lorakit.data.types import ClassificationSplit
from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# A tokenizer without a real limit reports a huge sentinel (int(1e30)) as model_max_length.
_NO_LIMIT = 10**9


def tokenize_split(
    tokenizer: PreTrainedTokenizerBase, split: ClassificationSplit, max_length: int
) -> list[dict[str, list[int] | int]]:
    """Tokenize a split into one feature dict per example, truncated to `max_length`, unpadded.

    Each dict holds `input_ids` and `attention_mask` (lists of n ≤ max_length ints, special tokens
    included), `token_type_ids` when the tokenizer makes them (pair tasks: 0 for the first text,
    1 for the second), and `labels` (the int class index). A pair is truncated longest-first.

    Raises:
        LorakitError: max_length is not a positive integer, leaves no room after the special
            tokens, or exceeds the tokenizer's `model_max_length`.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise LorakitError(f"max_length must be a positive integer, got {max_length!r}")
    special = tokenizer.num_special_tokens_to_add(pair=split.text_pairs is not None)
    if max_length <= special:
        raise LorakitError(
            f"max_length={max_length} leaves no room for text after the {special} special tokens; "
            f"use at least {special + 1}"
        )
    limit = tokenizer.model_max_length
    if limit < _NO_LIMIT and max_length > limit:
        raise LorakitError(
            f"max_length={max_length} exceeds the model's limit of {limit} tokens (tokenizer.model_max_length); "
            f"use at most {limit}"
        )
    if not len(split):
        return []
    encoded = tokenizer(split.texts, split.text_pairs, truncation=True, max_length=max_length)
    keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded]
    return [{**{key: encoded[key][i] for key in keys}, "labels": label} for i, label in enumerate(split.labels)]


@dataclass(frozen=True)
class PadCollator:
    """Collate feature dicts into tensors padded to the longest example of the batch.

    Returns `input_ids`, `attention_mask` (0 on padding), `token_type_ids` when present:
    (batch, longest rounded up to `pad_to_multiple_of`) int64; `labels`: (batch,) int64. Padding
    goes on `padding_side`, as the tokenizer says (left for decoder models that generate). A plain
    class rather than a closure, so DataLoader workers can pickle it.
    """

    pad_token_id: int
    pad_token_type_id: int = 0
    padding_side: str = "right"
    pad_to_multiple_of: int = 1

    def __call__(self, features: Sequence[Mapping[str, Sequence[int] | int]]) -> dict[str, torch.Tensor]:
        longest = max(len(feature["input_ids"]) for feature in features)
        width = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        fill = {"input_ids": self.pad_token_id, "token_type_ids": self.pad_token_type_id}
        batch = {}
        for key in features[0]:
            if key == "labels":
                batch[key] = torch.tensor([feature[key] for feature in features], dtype=torch.long)
                continue
            padded = torch.full((len(features), width), fill.get(key, 0), dtype=torch.long)
            for row, feature in enumerate(features):
                values = torch.as_tensor(feature[key], dtype=torch.long)
                if self.padding_side == "left":
                    padded[row, width - len(values) :] = values
                else:
                    padded[row, : len(values)] = values
            batch[key] = padded
        return batch


def pad_collate(tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int = 1) -> PadCollator:
    """A DataLoader `collate_fn` that pads with the tokenizer's pad token (see `PadCollator`).

    `pad_to_multiple_of` rounds the batch width up (e.g. 8): fewer distinct shapes means oneDNN
    and cuBLAS reuse their cached kernels instead of building (and keeping) one per length.

    Raises:
        LorakitError: the tokenizer has no pad token (GPT-2 style); the message says how to set one.
    """
    if tokenizer.pad_token_id is None:
        raise LorakitError(
            "the tokenizer has no pad token, which batching needs; set one first, "
            "e.g. tokenizer.pad_token = tokenizer.eos_token"
        )
    if not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1:
        raise LorakitError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of!r}")
    return PadCollator(tokenizer.pad_token_id, tokenizer.pad_token_type_id, tokenizer.padding_side, pad_to_multiple_of)


def padding_fraction(batches: Iterable[Mapping[str, torch.Tensor]]) -> float:
    """The share of pad tokens over padded batches: Σ(attention_mask == 0) / Σ numel, in [0, 1).

    This is the compute a forward pass spends on padding; compare it across samplers.
    """
    padding = total = 0
    for batch in batches:
        mask = batch["attention_mask"]
        padding += int((mask == 0).sum())
        total += mask.numel()
    return padding / total if total else 0.0


class LengthGroupedSampler(Sampler[int]):
    """Yield example indices so that consecutive runs of `batch_size` have similar lengths.

    With shuffle, each epoch: permute all indices, cut them into megabatches of
    `megabatch_factor × batch_size`, sort each megabatch by length (longest first) and cut it into
    batches, then shuffle the order of the batches. Batches stay random in content and order, yet
    hold similar lengths, so per-batch padding wastes little. The batch with the longest example
    goes first, so running out of memory shows at the first step, not hours in. The one batch
    that may be short (the tail of the last megabatch) goes last, so a DataLoader with the same
    `batch_size` cuts the stream exactly at batch boundaries.

    Without shuffle (evaluation), indices come sorted by length, longest first: the least
    padding, in a fixed order.

    The order depends only on `(seed, epoch)`: the same in every process; call `set_epoch` each
    epoch for a new one. Every index appears exactly once per epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 42,
        shuffle: bool = True,
        megabatch_factor: int = 50,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("megabatch_factor", megabatch_factor)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise LorakitError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise LorakitError(f"seed must be a non-negative integer, got {seed!r}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.megabatch_factor = megabatch_factor
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order `__iter__` yields next."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        yield from (int(index) for batch in self.batches() for index in batch)

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches of indices, in the order `__iter__` yields them."""
        lengths = self.lengths
        size = self.batch_size
        if not self.shuffle:
            order = np.argsort(-lengths, kind="stable")
            return [order[start : start + size] for start in range(0, len(order), size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        permutation = rng.permutation(len(lengths))
        megabatch = size * self.megabatch_factor
        batches = []
        for start in range(0, len(permutation), megabatch):
            chunk = permutation[start : start + megabatch]
            chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        # Only the last batch can be short (megabatches are whole multiples of batch_size).
        tail = batches[-1:] if batches and len(batches[-1]) < size else []
        full = batches[: len(batches) - len(tail)]
        full = [full[i] for i in rng.permutation(len(full))]
        if full:
            longest = int(np.argmax([lengths[batch].max() for batch in full]))
            full[0], full[longest] = full[longest], full[0]
        return full + tail
