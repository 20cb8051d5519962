"""A per-request stream of generated text, filled by the worker thread, read by sync or async code.

    worker thread:  stream.push(Piece("Hel")) … stream.push(Piece("lo")) … stream.close()   (or close(error))
    a thread:       for piece in stream: …                       (blocks between pieces)
    asyncio:        async for piece in stream: …                  (awaits, never blocks the loop)

A `Piece` is the next text and, when the request asked for them, the log-probabilities of the
tokens drawn since the previous piece. Every reader sees every piece from the start, so a reader
may attach late.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's text, its log-probability, and the `top` most likely tokens' (text,
    log-probability) at its position, most likely first (empty unless asked for).

    Log-probabilities are natural logs of the model's own distribution, softmax(logits), before
    temperature and top_p reshape it (vLLM's default, "raw" log-probabilities).
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Piece:
    """The next piece of a generation's text, and the log-probabilities of the tokens drawn since
    the previous piece (empty unless the request asked for them)."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


class TokenStream:
    """Pieces of one generation, in order; iteration ends at `close()` or raises its error."""

    def __init__(self) -> None:
        self._pieces: list[Piece] = []
        self._closed = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def push(self, piece: Piece) -> None:
        """Append a piece and wake every reader (ignored once the stream is closed)."""
        with self._changed:
            if self._closed:
                return
            self._pieces.append(piece)
            self._wake()

    def close(self, error: BaseException | None = None) -> None:
        """End the stream; readers raise `error` after the pieces already pushed, if given."""
        with self._changed:
            if self._closed:
                return
            self._closed, self._error = True, error
            self._wake()

    @property
    def closed(self) -> bool:
        """Whether `close()` was called: no more pieces will come."""
        return self._closed

    def text(self) -> str:
        """The text of every piece pushed so far."""
        with self._changed:
            return "".join(piece.text for piece in self._pieces)

    def __iter__(self) -> Iterator[Piece]:
        """Every piece from the first, blocking the thread between pieces; raises the close error."""
        seen = 0
        while True:
            with self._changed:
                while len(self._pieces) == seen and not self._closed:
                    self._changed.wait()
                new, done = self._pieces[seen:], self._closed and len(self._pieces) == seen
            if done:
                self._raise_error()
                return
            seen += len(new)
            yield from new

    async def __aiter__(self) -> AsyncIterator[Piece]:
        """Every piece from the first, awaiting (never blocking the loop) between pieces; raises the close error."""
        seen = 0
        loop = asyncio.get_running_loop()
        while True:
            with self._changed:
                new, closed = self._pieces[seen:], self._closed
                waiter = None
                if not new and not closed:
                    waiter = loop.create_future()
                    self._async_waiters.append((loop, waiter))
            if waiter is not None:
                await waiter
                continue
            if not new:
                self._raise_error()
                return
            seen += len(new)
            for piece in new:
                yield piece

    def _wake(self) -> None:
        """Notify every reader (caller holds `_changed`); asyncio readers through their own loop."""
        self._changed.notify_all()
        for loop, waiter in self._async_waiters:
            loop.call_soon_threadsafe(_resolve, waiter)
        self._async_waiters.clear()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error


def _resolve(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)
