"""Generation batches: left-padded prompts, one `model.generate()` with mixed adapters, per-row limits.

Every row stops at its own end-of-sequence token or its own `max_new_tokens` (rows finished early
ride along as padding until the longest is done). A batch shares one sampling setting (greedy, or
temperature/top_p): the batcher only batches requests that agree. Text streams per request as
tokens arrive, for any batch size.
"""

from __future__ import annotations

from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from lorakit.errors import LorakitError
from lorakit.serve.engine.adapters import AdapterInfo
from lorakit.serve.engine.batch import Batch
from lorakit.serve.engine.batcher import Request
from lorakit.serve.engine.stream import TokenStream


@dataclass(frozen=True)
class GenerateInput:
    """A prompt, tokenized as is (render a chat with `lorakit.inference.generation.prompt_text`), and its settings.

    temperature 0 is greedy decoding; otherwise sampling with `temperature` and nucleus `top_p`.
    """

    prompt: str
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    stream: TokenStream = field(default_factory=TokenStream, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise LorakitError(f"max_new_tokens must be a whole number of at least 1; got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise LorakitError(f"temperature must be 0 (greedy) or more; got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise LorakitError(f"top_p must be in (0, 1]; got {self.top_p!r}")

    @property
    def batch_key(self) -> tuple:
        """Requests that may share a batch: greedy ones, or ones with equal temperature and top_p."""
        return ("generate", self.temperature, self.top_p if self.temperature > 0 else 1.0)


@dataclass(frozen=True)
class Generation:
    """One request's output: the new text, its token ids, and why it stopped ("stop": end of
    sequence; "length": max_new_tokens)."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        """New tokens generated (OpenAI's usage.completion_tokens)."""
        return len(self.token_ids)


@dataclass
class GenerationHandle:
    """What `submit_generate` returns: the Future of the `Generation`, and its text stream, which
    closes when the Future resolves (with the Future's error, if it failed or was cancelled)."""

    future: Future
    stream: TokenStream

    def __post_init__(self) -> None:
        self.future.add_done_callback(self._close_stream)

    def _close_stream(self, future: Future) -> None:
        if future.cancelled():
            self.stream.close(CancelledError())
        else:
            self.stream.close(future.exception())


def run_generation(batch: Batch, requests: list[Request], max_positions: int) -> None:
    """Generate for one batch of requests with equal sampling settings; resolve each Future."""
    live = _tokenized(batch, requests, max_positions)
    if not live:
        return
    inputs = batch.tokenizer.pad({"input_ids": [ids for _, _, ids in live]}, padding_side="left", return_tensors="pt")
    inputs = inputs.to(batch.device)
    limits = [request.payload.max_new_tokens for request, _, _ in live]
    rows = _RowCollector(batch.tokenizer, [request for request, _, _ in live], _eos_ids(batch.model, batch.tokenizer))
    config = _generation_config(live[0][0].payload, max(limits), rows.eos_ids, batch.tokenizer)
    try:
        with batch.forward([info for _, info, _ in live]):
            batch.model.generate(
                **inputs,
                generation_config=config,
                streamer=rows,
                stopping_criteria=StoppingCriteriaList([_RowLimits(limits, inputs["input_ids"].shape[1])]),
            )
    except Exception as error:
        for request, _, _ in live:
            _fail(request, error)
        raise
    for i, (request, _, ids) in enumerate(live):
        request.future.set_result(
            Generation(rows.text(i), rows.tokens[i], rows.finish_reasons[i] or "length", prompt_tokens=len(ids))
        )


def _tokenized(
    batch: Batch, requests: list[Request], max_positions: int
) -> list[tuple[Request, AdapterInfo | None, list[int]]]:
    """(request, adapter, prompt ids) of the requests that can run; the others' Futures fail."""
    live = []
    for request in requests:
        try:
            info = _generator(batch, request)
            # As `lorakit generate`: the prompt is read as is; a chat is rendered (with its special
            # tokens) by lorakit.inference.generation.prompt_text before it gets here.
            ids = batch.tokenizer(request.payload.prompt, add_special_tokens=False)["input_ids"]
            if len(ids) + request.payload.max_new_tokens > max_positions:
                raise LorakitError(
                    f"the prompt is {len(ids)} tokens and max_new_tokens {request.payload.max_new_tokens}; "
                    f"together they must fit the model's {max_positions} positions"
                )
            if not ids:
                raise LorakitError("the prompt is empty; send at least one token of text")
        except LorakitError as error:
            _fail(request, error)
            continue
        live.append((request, info, ids))
    return live


def _generation_config(settings: GenerateInput, max_new_tokens: int, eos_ids: set[int], tokenizer) -> GenerationConfig:
    """`generate`'s settings for a batch: the rows' shared sampling, the longest row's limit."""
    sampling = settings.temperature > 0
    # Unset (None) fields are filled from the model's generation config and then transformers'
    # defaults (top_k=50): sampling sets all three so that only temperature and top_p apply.
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=settings.temperature if sampling else None,
        top_p=settings.top_p if sampling else None,
        top_k=0 if sampling else None,
        num_beams=1,
        num_return_sequences=1,
        eos_token_id=sorted(eos_ids),
        pad_token_id=_pad_id(tokenizer, eos_ids),
    )


def _generator(batch: Batch, request: Request) -> AdapterInfo | None:
    """The request's adapter, refused if it is a classifier."""
    info = batch.adapter_of(request)
    if info is not None and info.label_names is not None:
        raise LorakitError(f"adapter {info.name!r} is a classifier ({info.task_type}); it cannot generate text")
    return info


def _fail(request: Request, error: BaseException) -> None:
    if not request.future.done():
        request.future.set_exception(error)


def _eos_ids(model: nn.Module, tokenizer) -> set[int]:
    configured = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _pad_id(tokenizer, eos_ids: set[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if eos_ids:
        return min(eos_ids)
    raise LorakitError("the tokenizer has neither a pad nor an end-of-sequence token; batching needs one")


class _RowLimits(StoppingCriteria):
    """Row i is done once it has `limits[i]` new tokens (generate's own max is the largest)."""

    def __init__(self, limits: list[int], prompt_length: int) -> None:
        self.limits = torch.tensor(limits)
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_length
        return (generated >= self.limits).to(input_ids.device)


class _RowCollector(BaseStreamer):
    """Receives each step's new tokens (batch,) from `generate`, keeps each row's own tokens up to
    its end of sequence or limit, and streams the new text to the row's `TokenStream`.

    Text is re-decoded from the row's tokens each step and only the new suffix is pushed (as
    transformers' TextStreamer does), so multi-token characters and tokenizer spacing come out
    right; a suffix ending in an incomplete character (U+FFFD) is held back until it completes.
    """

    def __init__(self, tokenizer, requests: list[Request], eos_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.requests = requests
        self.eos_ids = eos_ids
        self.tokens: list[list[int]] = [[] for _ in requests]
        self.finish_reasons: list[str | None] = [None for _ in requests]
        self._pushed = [0 for _ in requests]  # characters of each row's text already streamed
        self._seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        """One decoding step's tokens, (rows,) or (rows, 1): record them, stop rows at eos or at
        max_new_tokens, stream the new text."""
        if not self._seen_prompt:  # generate first hands over the prompt itself
            self._seen_prompt = True
            return
        for i, token in enumerate(value.reshape(-1).tolist()):
            if self.finish_reasons[i] is not None:
                continue
            if token in self.eos_ids:
                self.finish_reasons[i] = "stop"
                continue
            self.tokens[i].append(token)
            if len(self.tokens[i]) >= self.requests[i].payload.max_new_tokens:
                self.finish_reasons[i] = "length"
            self._push(i)

    def end(self) -> None:
        """Flush whatever text was held back."""
        for i in range(len(self.requests)):
            self._push(i, final=True)

    def text(self, i: int) -> str:
        """Row `i`'s generated text so far."""
        return self.tokenizer.decode(self.tokens[i], skip_special_tokens=True)

    def _push(self, i: int, final: bool = False) -> None:
        text = self.text(i)
        if text.endswith("\ufffd") and not final:
            return
        new = text[self._pushed[i] :]
        if new:
            self._pushed[i] = len(text)
            self.requests[i].payload.stream.push(new)
