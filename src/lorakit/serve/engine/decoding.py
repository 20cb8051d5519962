r"""Continuous (iteration-level) decoding: rows join and leave a running batch between steps.

    admit(rows)  prefill the new rows together (left-padded, each on its adapter), draw each one's
                 first token, and splice their KV cache into the running one
    step()       one token for every running row: one forward of (rows, 1) on the shared cache
    drop(rows)   take rows out now (a client gone, a deadline passed)

The running batch keeps one KV cache per layer, (rows, heads, length, head_dim), left-padded to a
common length, and a mask (rows, length): 1 where a position is a real token. Splicing pads the
shorter of the two caches on the left; a row that leaves is cut out with its mask, and columns no
remaining row uses any more are trimmed, so the cache is as long as its longest live row.

    positions: row i's next token sits at mask[i].sum() (its own count of real tokens), so a row
    computes what it computes alone, whatever else shares the batch; padded keys are masked out.

Every row draws its own tokens: greedy (temperature 0) or sampled with its temperature and top_p
from its own generator (seeded per request, so a seed reproduces its text whatever the batch).
A row finishes at one of its end-of-sequence ids (finish_reason "stop") or at its max_new_tokens
("length"); the scheduler finishes one whose text reached a stop string (`Row.finish`, then
`drop`). Adapters of any rank mix in one batch (`lorakit.serve.kernels.mixed_adapters`).

A row that asks for log-probabilities (`top_logprobs` not None) gets, per drawn token, its
log-probability and the `top_logprobs` highest ones: log_softmax of the row's fp32 logits, the
model's own distribution before temperature and top_p (vLLM's default). Only those rows pay for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache

from lorakit.errors import LorakitError
from lorakit.serve.engine.prefill import Prefill
from lorakit.serve.kernels.mixed import mixed_adapters
from lorakit.serve.kernels.slots import AdapterSlots


@dataclass(frozen=True)
class StepLogprobs:
    """A row's log-probabilities at one step: the drawn token's, and the `top` highest ones as
    (token id, log-probability), highest first."""

    logprob: float
    top: tuple[tuple[int, float], ...]


@dataclass(eq=False)
class Row:
    """One request being generated: what it asks for, and its tokens so far.

    adapter: the adapter's name on the model (None: the base). prompt_ids: the prompt's token ids.
    temperature 0 is greedy; otherwise sampling with `temperature` and nucleus `top_p` from a
    generator seeded with `seed` (None: drawn from torch's global generator, not reproducible).
    top_logprobs: None computes no log-probabilities; k records, per kept token, a `StepLogprobs`
    with the k highest (`logprobs[i]` is `tokens[i]`'s).
    """

    adapter: str | None
    prompt_ids: list[int]
    max_new_tokens: int
    eos_ids: frozenset[int]
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    top_logprobs: int | None = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[StepLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    generator: torch.Generator | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise LorakitError("the prompt is empty; send at least one token of text")
        if self.temperature > 0 and self.seed is not None:
            self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def done(self) -> bool:
        """Whether the row has finished (at an end-of-sequence id or its max_new_tokens)."""
        return self.finish_reason is not None

    def take(self, token: int, logprobs: StepLogprobs | None = None) -> None:
        """Record a drawn token and its log-probabilities (an end-of-sequence id ends the row and
        is not kept)."""
        if token in self.eos_ids:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        if logprobs is not None:
            self.logprobs.append(logprobs)
        if len(self.tokens) >= self.max_new_tokens:
            self.finish_reason = "length"

    def finish(self, reason: str) -> None:
        """End the row for a reason found outside the decoder (a stop string in its text): it
        draws no more tokens; `Decoder.drop` takes it out of the running batch."""
        self.finish_reason = reason


class Decoder:
    """A running decode batch on `model` (eval mode; its adapters packed in `slots`, or None for
    `mixed_adapters` to pack each forward's own). `pad_id` fills the left of shorter prompts;
    `autocast` is entered around every forward.

    Prompts are tokenized as they are, without the tokenizer's special tokens: a chat rendered by
    its template holds its own, as in training and `lorakit generate`. A prompt longer than a
    chunk of `prefill_tokens` tokens is prefilled a chunk per `step` (`engine/prefill.py`), so the
    running rows wait at most one chunk for it.
    """

    add_special_tokens = False

    def __init__(
        self,
        model: nn.Module,
        pad_id: int,
        slots: AdapterSlots | None = None,
        autocast: contextlib.AbstractContextManager | None = None,
        prefill_tokens: int = 512,
    ) -> None:
        if prefill_tokens < 1:
            raise LorakitError(f"prefill_tokens must be at least 1; got {prefill_tokens}")
        self.model = model
        self.pad_id = pad_id
        self.slots = slots
        self.autocast = autocast or contextlib.nullcontext()
        self.prefill_tokens = prefill_tokens
        self.prefills: list[Prefill] = []  # groups of new rows still prefilling, oldest first
        self.rows: list[Row] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.last = torch.zeros(0, 1, dtype=torch.long)  # each running row's last token, fed next

    @property
    def size(self) -> int:
        """Rows decoding plus rows still prefilling: what the batch holds."""
        return len(self.rows) + sum(len(group.rows) for group in self.prefills)

    @property
    def prefilling(self) -> list[Row]:
        """The rows whose prompts are still being prefilled."""
        return [row for group in self.prefills for row in group.rows]

    @property
    def device(self) -> torch.device:
        """Where the model's weights, and so the batch's tensors, live."""
        return next(self.model.parameters()).device

    def check_fits(self, prompt_tokens: int, max_new_tokens: int, max_positions: int) -> None:
        """Refuse a request whose prompt and new tokens, together, overflow the model's `max_positions`."""
        if prompt_tokens + max_new_tokens > max_positions:
            raise LorakitError(
                f"the prompt is {prompt_tokens} tokens and max_new_tokens {max_new_tokens}; "
                f"together they must fit the model's {max_positions} positions"
            )

    def admit(self, rows: Sequence[Row]) -> list[Row]:
        """Prefill `rows` and draw their first tokens; the rows not yet done join the batch.
        Returns the rows that finished at their first token.

        The rows are grouped by prompt length, shortest first, each group about one chunk
        (`prefill_tokens`) of tokens; the first group's first chunk runs now, the rest a chunk per
        `step` (a prompt longer than a chunk is a group of its own, prefilled over several), so a
        short prompt never waits for a long one."""
        groups: list[list[Row]] = []
        for row in sorted(rows, key=lambda row: len(row.prompt_ids)):
            if not groups or (len(groups[-1]) + 1) * len(row.prompt_ids) > self.prefill_tokens:
                groups.append([])
            groups[-1].append(row)
        if not groups:
            return []
        prefills = [Prefill(group, self.pad_id, self.model.config, self.device) for group in groups]
        self.prefills += prefills
        return self._prefill(prefills[0])

    def step(self) -> list[Row]:
        """One chunk of the oldest group still prefilling, then one new token for every running
        row; returns the rows that finished."""
        finished = self._prefill(self.prefills[0]) if self.prefills else []
        return finished + self._decode()

    def _prefill(self, group: Prefill) -> list[Row]:
        """Run `group`'s next chunk; if that was its last, its rows draw their first tokens and
        join the batch (the group leaves `prefills`). Returns the rows that finished at once."""
        ids, mask, positions = group.chunk(self.prefill_tokens)
        logits = self._forward(group.rows, ids, mask, positions, group.cache)
        if not group.finished:
            return []
        self.prefills.remove(group)
        for row, (token, logprobs) in zip(group.rows, self._draw(group.rows, logits), strict=True):
            row.take(token, logprobs)
        self._splice(group.rows, group.cache, group.mask)
        return self._retire()

    def _decode(self) -> list[Row]:
        """One new token for every running row; returns the rows that finished with it."""
        if not self.rows:
            return []
        positions = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=-1)
        logits = self._forward(self.rows, self.last, self.mask, positions, self.cache)
        for row, (token, logprobs) in zip(self.rows, self._draw(self.rows, logits), strict=True):
            row.take(token, logprobs)
        self.last = torch.tensor([[row.tokens[-1] if row.tokens else self.pad_id] for row in self.rows])
        self.last = self.last.to(self.device)
        return self._retire()

    def drop(self, rows: Sequence[Row]) -> None:
        """Take `rows` out of the batch now, running or still prefilling (their tokens so far stay
        on them)."""
        leaving = {id(row) for row in rows}
        for group in list(self.prefills):
            group.drop(leaving)
            if not group.rows:
                self.prefills.remove(group)
        self._keep([i for i, row in enumerate(self.rows) if id(row) not in leaving])

    def _forward(
        self, rows: Sequence[Row], ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: DynamicCache
    ) -> torch.Tensor:
        """The last position's logits (rows, vocab) in fp32, `cache` extended by `ids`."""
        adapters = [row.adapter for row in rows]
        mixed = mixed_adapters(self.model, adapters, self.slots) if any(adapters) else contextlib.nullcontext()
        with torch.no_grad(), self.autocast, mixed:
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1].float()

    def _draw(self, rows: Sequence[Row], logits: torch.Tensor) -> list[tuple[int, StepLogprobs | None]]:
        """Each row's next token from its logits (argmax, or a draw with its own settings), and
        its log-probabilities if the row asks for them."""
        tokens = logits.argmax(-1).tolist()
        for i, row in enumerate(rows):
            if row.temperature > 0:
                tokens[i] = _sample(logits[i], row.temperature, row.top_p, row.generator)
        return list(zip(tokens, _logprobs(rows, logits, tokens), strict=True))

    def _splice(self, rows: list[Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Add `rows` (their prefilled `cache` and `mask`) to the running batch, padding the
        shorter cache on the left; then let the rows already done go."""
        last = torch.tensor([[row.tokens[-1] if row.tokens else self.pad_id] for row in rows]).to(self.device)
        if self.cache is None or not self.rows:
            self.rows, self.cache, self.mask, self.last = rows, cache, mask, last
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for ours, theirs in zip(self.cache.layers, cache.layers, strict=True):
            ours.keys = torch.cat([_left_pad(ours.keys, width), _left_pad(theirs.keys, width)])
            ours.values = torch.cat([_left_pad(ours.values, width), _left_pad(theirs.values, width)])
        self.mask = torch.cat([_left_pad(self.mask, width, dim=1), _left_pad(mask, width, dim=1)])
        self.rows, self.last = self.rows + rows, torch.cat([self.last, last])

    def _retire(self) -> list[Row]:
        """Remove and return the rows that are done."""
        finished = [row for row in self.rows if row.done]
        if finished:
            self._keep([i for i, row in enumerate(self.rows) if not row.done])
        return finished

    def _keep(self, kept: list[int]) -> None:
        """Keep only rows `kept` (indices), then trim cache columns no kept row uses."""
        if len(kept) == len(self.rows):
            return
        index = torch.tensor(kept, dtype=torch.long, device=self.device)
        self.rows = [self.rows[i] for i in kept]
        self.mask, self.last = self.mask[index], self.last[index]
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else self.mask.shape[1]
        self.mask = self.mask[:, start:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, start:], layer.values[index, :, start:]


def _left_pad(tensor: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    """`tensor` with zeros prepended along `dim` up to `width`."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _logprobs(rows: Sequence[Row], logits: torch.Tensor, tokens: list[int]) -> list[StepLogprobs | None]:
    """Per row, None, or (if it asks) the drawn token's log-probability and its `top_logprobs`
    highest: log_softmax of its logits (rows, vocab), computed for the asking rows only."""
    asking = [i for i, row in enumerate(rows) if row.top_logprobs is not None]
    found: list[StepLogprobs | None] = [None] * len(rows)
    if not asking:
        return found
    logprobs = torch.log_softmax(logits[asking], dim=-1)
    drawn = logprobs.gather(1, torch.tensor([[tokens[i]] for i in asking], device=logprobs.device))[:, 0].tolist()
    values, ids = logprobs.topk(max(rows[i].top_logprobs for i in asking), dim=-1)
    values, ids = values.tolist(), ids.tolist()
    for j, i in enumerate(asking):
        top = rows[i].top_logprobs
        found[i] = StepLogprobs(drawn[j], tuple(zip(ids[j][:top], values[j][:top], strict=True)))
    return found


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    """A token drawn from softmax(logits / temperature), cut to the smallest set of tokens whose
    probability reaches `top_p` (nucleus sampling)."""
    # In float64, where any positive temperature is above 0 (1e-300 is 0 in float32), and shifted so
    # the largest logit is 0: the smallest temperatures then give the likeliest token, not NaNs.
    probabilities = torch.softmax((logits.double() - logits.max()) / temperature, dim=-1).cpu()
    if top_p < 1.0:
        ordered, order = probabilities.sort(descending=True)
        outside = ordered.cumsum(-1) - ordered >= top_p  # tokens after the nucleus is full
        ordered[outside] = 0.0
        probabilities = torch.zeros_like(probabilities).scatter_(0, order, ordered)
    return int(torch.multinomial(probabilities, 1, generator=generator))
