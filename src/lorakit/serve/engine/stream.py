"""A per-request stream of generated text, filled by the worker thread, read by sync or async code.

    worker thread:  stream.push("Hel") … stream.push("lo") … stream.close()      (or close(error))
    a thread:       for piece in stream: …                       (blocks between pieces)
    asyncio:        async for piece in stream: …                  (awaits, never blocks the loop)

Every reader sees every piece from the start, so a reader may attach late.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator


class TokenStream:
    """Text pieces of one generation, in order; iteration ends at `close()` or raises its error."""

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._closed = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []

    def push(self, piece: str) -> None:
        """Append a piece of text and wake every reader (ignored once the stream is closed)."""
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
        """Everything pushed so far."""
        with self._changed:
            return "".join(self._pieces)

    def __iter__(self) -> Iterator[str]:
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

    async def __aiter__(self) -> AsyncIterator[str]:
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
