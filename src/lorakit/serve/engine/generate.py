"""What a generation request is and what it returns: settings, result, handle; the model's
end-of-sequence and pad ids. The scheduler (engine/scheduler.py) runs the requests.
"""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field

from torch import nn

from lorakit.errors import LorakitError
from lorakit.serve.engine.stream import TokenStream


@dataclass(frozen=True)
class GenerateInput:
    """A prompt, tokenized as is (render a chat with `lorakit.inference.generation.prompt_text`), and its settings.

    temperature 0 is greedy decoding; otherwise sampling with `temperature` and nucleus `top_p`,
    from a generator seeded with `seed` (None: not reproducible).
    """

    prompt: str
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stream: TokenStream = field(default_factory=TokenStream, compare=False)
    abandoned: threading.Event = field(default_factory=threading.Event, compare=False)  # see GenerationHandle.cancel

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise LorakitError(f"max_new_tokens must be a whole number of at least 1; got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise LorakitError(f"temperature must be 0 (greedy) or more; got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise LorakitError(f"top_p must be in (0, 1]; got {self.top_p!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise LorakitError(f"seed must be a whole number; got {self.seed!r}")


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
