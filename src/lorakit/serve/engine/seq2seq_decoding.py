r"""Continuous decoding for encoder-decoder models (T5, BART): rows join and leave between steps.

    admit(rows)  encode the new rows' prompts once, together (right-padded, each on its adapter),
                 feed each one's decoder the start token, draw its first token, and splice its
                 caches and encoder states into the running batch
    step()       one token for every running row: one decoder forward of (rows, 1)
    drop(rows)   take rows out now (a client gone, a deadline passed)

What the running batch keeps, per row (the causal `Decoder`'s, plus the encoder's side):

    decoder self-attention cache   (rows, heads, target, head_dim)  left-padded, `mask` (rows, target)
    cross-attention cache          (rows, heads, source, head_dim)  right-padded, `source` (rows, source)
    encoder states                 (rows, source, hidden)           right-padded likewise

The encoder runs once per request: its states and the cross-attention keys and values (computed
at the row's first decoder forward, on its adapter) are kept until the row leaves. Joining pads
the shorter of two self-attention caches on the left and the shorter source on the right; a row
that leaves is cut out, and columns no remaining row uses are trimmed on both sides.

    positions: a decoder with relative positions (T5's bias; one without `embed_positions` is taken
    to be one) sees only distances, which left padding keeps. A decoder with learned or sinusoidal
    absolute positions (BART, mBART, Marian, Pegasus) is given each row's own position,
    mask[i].sum(), through its `embed_positions`, so a row computes what it computes alone; one
    whose positions cannot be given per row is refused.

Rows (`Row`), their sampling and their end (end-of-sequence id, max_new_tokens) are the causal
decoder's (`lorakit.serve.engine.decoding`); adapters of any rank mix in one batch, in the encoder,
the cross-attention and the decoder alike (`lorakit.serve.kernels.mixed_adapters`).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from transformers import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from lorakit.errors import LorakitError
from lorakit.serve.engine.decoding import Decoder, Row
from lorakit.serve.engine.kv_cache import slack_cache
from lorakit.serve.kernels.mixed import mixed_adapters
from lorakit.serve.kernels.slots import AdapterSlots


class Seq2SeqDecoder(Decoder):
    """A running decode batch on an encoder-decoder `model` (eval mode; its adapters packed in
    `slots`, or None for `mixed_adapters` to pack each forward's own). `pad_id` fills the right of
    shorter prompts; every decoder starts from `model.config.decoder_start_token_id`; `autocast`
    is entered around every forward.

    Prompts are tokenized with the tokenizer's special tokens (T5's closing `</s>`), as training
    and `lorakit generate` tokenize a seq2seq model's input.
    """

    add_special_tokens = True

    def __init__(
        self,
        model: nn.Module,
        pad_id: int,
        slots: AdapterSlots | None = None,
        autocast: contextlib.AbstractContextManager | None = None,
        prefill_tokens: int = 512,
    ) -> None:
        super().__init__(model, pad_id, slots, autocast, prefill_tokens)  # the encoder runs whole, at admit
        self.start_id = model.config.decoder_start_token_id
        if self.start_id is None:
            raise LorakitError(
                f"{type(model).__name__}'s config has no decoder_start_token_id; set it in the base model's config.json"
            )
        self.embed_positions = _absolute_positions(model)
        self.cross: DynamicCache | None = None  # cross-attention keys, values: (rows, heads, source, head_dim)
        self.source = torch.zeros(0, 0, dtype=torch.long)  # encoder mask (rows, source)
        self.encoded = torch.zeros(0, 0, 0)  # encoder states (rows, source, hidden)

    def check_fits(self, prompt_tokens: int, max_new_tokens: int, max_positions: int) -> None:
        """Refuse a request whose prompt (the encoder's input) or whose max_new_tokens (the
        decoder's) is longer than the model's `max_positions`: each side has its own positions."""
        for what, tokens in (("the prompt is", prompt_tokens), ("max_new_tokens is", max_new_tokens)):
            if tokens > max_positions:
                raise LorakitError(f"{what} {tokens} tokens; it must fit the model's {max_positions} positions")

    def admit(self, rows: Sequence[Row]) -> list[Row]:
        """Encode `rows`, run each one's start token and draw its first token; the rows not yet
        done join the batch. Returns the rows that finished at their first token."""
        if not rows:
            return []
        width = max(len(row.prompt_ids) for row in rows)
        ids = torch.tensor([r.prompt_ids + [self.pad_id] * (width - len(r.prompt_ids)) for r in rows])
        source = torch.tensor([[1] * len(r.prompt_ids) + [0] * (width - len(r.prompt_ids)) for r in rows])
        ids, source = ids.to(self.device), source.to(self.device)
        start = torch.full((len(rows), 1), self.start_id, dtype=torch.long, device=self.device)
        cache = EncoderDecoderCache(slack_cache(self.model.config), DynamicCache(config=self.model.config))
        inputs = {"input_ids": ids, "attention_mask": source, "decoder_input_ids": start, "cache": cache}
        out = self._run(rows, torch.zeros_like(start), decoder_attention_mask=torch.ones_like(start), **inputs)
        for row, (token, logprobs) in zip(rows, self._draw(rows, out.logits[:, -1].float()), strict=True):
            row.take(token, logprobs)
        self._join_source(cache.cross_attention_cache, out.encoder_last_hidden_state, source)
        self._splice(list(rows), cache.self_attention_cache, torch.ones_like(start))
        return self._retire()

    def _forward(
        self, rows: Sequence[Row], ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        """The last position's logits (rows, vocab) in fp32 of decoder inputs `ids` (`Decoder.step`'s),
        attending to the running rows' encoder states; the self-attention `cache` extended by `ids`."""
        out = self._run(
            rows,
            positions,
            encoder_outputs=BaseModelOutput(last_hidden_state=self.encoded),
            attention_mask=self.source,
            decoder_input_ids=ids,
            decoder_attention_mask=mask,
            cache=EncoderDecoderCache(cache, self.cross),
        )
        return out.logits[:, -1].float()

    def _run(self, rows: Sequence[Row], positions: torch.Tensor, **inputs: object) -> Seq2SeqLMOutput:
        """`model(**inputs, use_cache=True)`, each row on its adapter and, where the decoder has
        absolute positions, each row's decoder inputs at its own `positions` (rows, n)."""
        adapters = [row.adapter for row in rows]
        mixed = mixed_adapters(self.model, adapters, self.slots) if any(adapters) else contextlib.nullcontext()
        with torch.no_grad(), self.autocast, mixed, _row_positions(self.embed_positions, positions):
            return self.model(**inputs, use_cache=True)

    def _join_source(self, cross: DynamicCache, encoded: torch.Tensor, source: torch.Tensor) -> None:
        """Add new rows' cross-attention `cross`, encoder states and `source` mask to the running
        batch's, the shorter source padded on the right (before `_splice` adds the rows)."""
        if not self.rows:
            self.cross, self.encoded, self.source = cross, encoded, source
            return
        width = max(self.source.shape[1], source.shape[1])
        for ours, theirs in zip(self.cross.layers, cross.layers, strict=True):
            ours.keys = torch.cat([_right_pad(ours.keys, width), _right_pad(theirs.keys, width)])
            ours.values = torch.cat([_right_pad(ours.values, width), _right_pad(theirs.values, width)])
        self.source = torch.cat([_right_pad(self.source, width, dim=1), _right_pad(source, width, dim=1)])
        self.encoded = torch.cat([_right_pad(self.encoded, width, dim=1), _right_pad(encoded, width, dim=1)])

    def _keep(self, kept: list[int]) -> None:
        """Keep only rows `kept` (indices), then trim the columns no kept row uses: decoder ones on
        the left (`Decoder._keep`), source ones on the right."""
        if len(kept) == len(self.rows):
            return
        super()._keep(kept)
        index = torch.tensor(kept, dtype=torch.long, device=self.device)
        self.source, self.encoded = self.source[index], self.encoded[index]
        used = self.source.any(dim=0).nonzero()
        end = int(used[-1]) + 1 if len(used) else 0
        self.source, self.encoded = self.source[:, :end], self.encoded[:, :end]
        for layer in self.cross.layers:
            layer.keys, layer.values = layer.keys[index, :, :end], layer.values[index, :, :end]


def _right_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    """`tensor` with zeros appended along `dim` up to `width`."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def _absolute_positions(model: nn.Module) -> nn.Module | None:
    """The decoder's absolute position embedding, if it has one (BART's family): a module whose
    `forward(ids_or_shape, cache_length, position_ids)` embeds the positions `position_ids`.
    None for a decoder with relative positions (no `embed_positions`: T5).

    Raises:
        LorakitError: the decoder embeds positions it derives itself (M2M100's, from its inputs'
            padding), which a batch whose rows began at different steps cannot share.
    """
    embed = getattr(model.get_decoder(), "embed_positions", None)
    if embed is None:
        return None
    if "position_ids" not in inspect.signature(embed.forward).parameters:
        raise LorakitError(
            f"{type(model).__name__}'s decoder derives its positions itself, so rows that joined the batch at "
            "different steps cannot decode together; lorakit serve batches T5- and BART-style seq2seq models"
        )
    return embed


@contextlib.contextmanager
def _row_positions(embed: nn.Module | None, positions: torch.Tensor) -> Iterator[None]:
    """Inside the block `embed` returns row i's embeddings at `positions[i]` (rows, n), whatever
    positions its decoder asks for (it asks for the batch's cache length, the same for every row).
    None (relative positions): nothing to place."""
    if embed is None:
        yield
        return
    original = embed.forward

    def forward(ids_or_shape: object, cache_length: int = 0, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        span = torch.arange(int(positions.max()) + 1, device=positions.device)
        table = original(ids_or_shape, 0, position_ids=span)  # (span, hidden), or (1, span, hidden)
        return table.reshape(len(span), table.shape[-1])[positions]

    embed.forward = forward
    try:
        yield
    finally:
        del embed.forward
