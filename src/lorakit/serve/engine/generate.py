"""What a generation request is and what it returns: settings, result, handle; the model's
end-of-sequence and pad ids; the seed of each of a request's choices. The scheduler
(engine/scheduler.py) runs the requests.
"""

from __future__ import annotations

import hashlib
import math
import threading
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

from torch import nn

from lorakit.errors import LorakitError
from lorakit.serve.engine.stream import TokenLogprob, TokenStream

MAX_TOP_LOGPROBS = 20  # most alternatives per token (OpenAI chat's limit)
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


@dataclass(frozen=True)
class GenerateInput:
    """A prompt, tokenized as is (render a chat with `lorakit.inference.generation.prompt_text`), and its settings.

    temperature 0 is greedy decoding; otherwise sampling with `temperature` and nucleus `top_p`,
    from a generator seeded with `seed` (None: not reproducible). `stop`: strings that end the
    generation where the text first holds one (the text ends before it). `top_logprobs`: None
    for no log-probabilities, else each token's and its `top_logprobs` (0..20) likeliest
    alternatives' (`TokenLogprob`).
    """

    prompt: str
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_logprobs: int | None = None
    stream: TokenStream = field(default_factory=TokenStream, compare=False)
    abandoned: threading.Event = field(default_factory=threading.Event, compare=False)  # see GenerationHandle.cancel

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise LorakitError(f"max_new_tokens must be a whole number of at least 1; got {self.max_new_tokens!r}")
        if not 0 <= self.temperature < math.inf:
            raise LorakitError(f"temperature must be 0 (greedy) or a finite number above; got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise LorakitError(f"top_p must be in (0, 1]; got {self.top_p!r}")
        if self.seed is not None and (not _is_whole(self.seed) or not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]):
            raise LorakitError(f"seed must be a whole number from -2**63 to 2**64 - 1; got {self.seed!r}")
        if not all(isinstance(stop, str) and stop for stop in self.stop):
            raise LorakitError(f"stop strings must be non-empty strings; got {self.stop!r}")
        top = self.top_logprobs
        if top is not None and (not _is_whole(top) or not 0 <= top <= MAX_TOP_LOGPROBS):
            raise LorakitError(f"top_logprobs must be None or a whole number from 0 to {MAX_TOP_LOGPROBS}; got {top!r}")


@dataclass(frozen=True)
class Generation:
    """One request's output: the new text, its token ids, and why it stopped ("stop": end of
    sequence or a stop string, the text then ending before it; "length": max_new_tokens).

    `logprobs` (None unless asked for) has one `TokenLogprob` per token id: with a stop string,
    also those of the tokens that made it, whose text is cut (as vLLM).
    """

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None

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
    abandoned: threading.Event = field(default_factory=threading.Event)  # the request's own (GenerateInput)

    def __post_init__(self) -> None:
        self.future.add_done_callback(self._close_stream)

    def cancel(self) -> None:
        """Give the request up (its client is gone): a waiting one never runs, a running one
        leaves the batch at the next step; the Future then fails with CancelledError."""
        self.abandoned.set()
        self.future.cancel()

    def _close_stream(self, future: Future) -> None:
        if future.cancelled():
            self.stream.close(CancelledError())
        else:
            self.stream.close(future.exception())


def choice_seed(seed: int | None, choice: int) -> int | None:
    """The seed of a request's `choice`-th choice (OpenAI's `n`): `seed` itself for the first,
    then a hash of (seed, choice), so each choice samples its own text and the whole response
    is reproducible; None stays None (not reproducible)."""
    if seed is None or choice == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}/{choice}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def eos_ids(model: nn.Module, tokenizer) -> set[int]:
    """The ids that end a generation: the model's generation config's and the tokenizer's."""
    configured = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def pad_id(tokenizer, eos_ids: set[int]) -> int:
    """The id that fills the left of shorter prompts: the tokenizer's pad, else an end-of-sequence id."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if eos_ids:
        return min(eos_ids)
    raise LorakitError("the tokenizer has neither a pad nor an end-of-sequence token; batching needs one")
