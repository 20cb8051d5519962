"""OpenAI-shaped generation responses: whole bodies, and server-sent event streams of chunks.

    data: {"id": "cmpl-…", "object": "text_completion", "choices": [{"index": 0, "text": "Hel", …}]}
    data: {… "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}
    data: {… "choices": [], "usage": {…}}               (only with stream_options.include_usage)
    data: [DONE]

A stream interleaves its choices' pieces as the engine produces them. Nothing is sent until the
first piece (or the first error) arrives, so a request that fails before generating anything gets
a proper 4xx JSON error instead of a 200 stream.

Log-probabilities, when asked, take OpenAI's two shapes: chat's `{"content": [{"token", "logprob",
"bytes", "top_logprobs": [{"token", "logprob", "bytes"}, …]}, …]}`, and completions' `{"tokens",
"token_logprobs", "top_logprobs": [{token: logprob, …}, …], "text_offset"}` (each dict holds the k
likeliest tokens and the drawn one; offsets count the characters of the tokens before, as vLLM).
A chunk carries those of the tokens drawn since the previous chunk. A log-probability below
-9999 (or -inf) is sent as -9999.0, as vLLM does: JSON has no infinity.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi.responses import StreamingResponse

from lorakit.serve.engine.generate import Generation, GenerationHandle
from lorakit.serve.engine.stream import Piece, TokenLogprob
from lorakit.serve.http.errors import ApiError, error_body

LOWEST_LOGPROB = -9999.0


class Shape:
    """How one endpoint's bodies look: `text_completion` (choices carry `text`) or `chat.completion`
    (choices carry `message`, stream chunks a `delta`).

    n: choices per prompt (choice i answers prompt i // n). logprobs: whether choices carry
    log-probabilities. include_usage: whether a stream ends with a usage chunk (and every other
    chunk carries `"usage": null`).
    """

    def __init__(self, chat: bool, model: str, n: int = 1, logprobs: bool = False, include_usage: bool = False) -> None:
        self.chat = chat
        self.model = model
        self.n = n
        self.logprobs = logprobs
        self.include_usage = include_usage
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self._offsets: dict[int, int] = {}  # a completions stream's next text_offset, per choice

    def body(self, generations: Sequence[Generation]) -> dict:
        """The whole response for finished generations, with token usage."""
        choices = []
        for index, generation in enumerate(generations):
            logprobs = self._logprobs(generation.logprobs or (), offset=0)
            if self.chat:
                content = {"message": {"role": "assistant", "content": generation.text}, "logprobs": logprobs}
            else:
                content = {"text": generation.text, "logprobs": logprobs}
            choices.append({"index": index, **content, "finish_reason": generation.finish_reason})
        return {**self._envelope(stream=False), "choices": choices, "usage": self.usage(generations)}

    def usage(self, generations: Sequence[Generation]) -> dict:
        """OpenAI's token usage: each prompt counted once (not once per choice), every choice's new tokens."""
        prompt_tokens = sum(generation.prompt_tokens for generation in generations[:: self.n])
        completion_tokens = sum(generation.completion_tokens for generation in generations)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def start_chunk(self, index: int) -> dict | None:
        """A chat stream opens each choice with the assistant role (as OpenAI does)."""
        return self._chunk(index, {"role": "assistant", "content": ""}, None) if self.chat else None

    def piece_chunk(self, index: int, piece: Piece) -> dict:
        """A stream chunk carrying the next piece of choice `index`'s text (and its log-probabilities)."""
        offset = self._offsets.get(index, 0)
        self._offsets[index] = offset + sum(len(entry.token) for entry in piece.logprobs)
        content = {"content": piece.text} if self.chat else piece.text
        return self._chunk(index, content, None, self._logprobs(piece.logprobs, offset))

    def end_chunk(self, index: int, generation: Generation) -> dict:
        """The stream chunk that ends choice `index`, with its finish_reason."""
        return self._chunk(index, {} if self.chat else "", generation.finish_reason)

    def usage_chunk(self, generations: Sequence[Generation]) -> dict:
        """The last chunk of a stream with `include_usage`: no choices, the request's usage."""
        return {**self._envelope(stream=True), "choices": [], "usage": self.usage(generations)}

    def _chunk(self, index: int, content: dict | str, finish_reason: str | None, logprobs: dict | None = None) -> dict:
        body = {"delta": content} if self.chat else {"text": content}
        choice = {"index": index, **body, "logprobs": logprobs, "finish_reason": finish_reason}
        usage = {"usage": None} if self.include_usage else {}
        return {**self._envelope(stream=True), "choices": [choice], **usage}

    def _logprobs(self, entries: Sequence[TokenLogprob], offset: int) -> dict | None:
        """`entries` in the endpoint's shape (None if not asked); the first token at text `offset`."""
        if not self.logprobs:
            return None
        if self.chat:
            return {"content": [_chat_entry(entry) for entry in entries]}
        offsets = []
        for entry in entries:
            offsets.append(offset)
            offset += len(entry.token)
        return {
            "tokens": [entry.token for entry in entries],
            "token_logprobs": [_finite(entry.logprob) for entry in entries],
            "top_logprobs": [_completion_top(entry) for entry in entries],
            "text_offset": offsets,
        }

    def _envelope(self, stream: bool) -> dict:
        kind = ("chat.completion.chunk" if stream else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def _chat_entry(entry: TokenLogprob) -> dict:
    """Chat's form of one token: token, logprob, UTF-8 bytes, and its alternatives' the same."""
    top = [_chat_token(token, logprob) for token, logprob in entry.top]
    return {**_chat_token(entry.token, entry.logprob), "top_logprobs": top}


def _chat_token(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": _finite(logprob), "bytes": list(token.encode("utf-8"))}


def _completion_top(entry: TokenLogprob) -> dict[str, float]:
    """Completions' form of a token's alternatives: {text: logprob}, the likeliest first, and the
    drawn token's (OpenAI: "up to logprobs + 1 elements")."""
    top: dict[str, float] = {}
    for token, logprob in entry.top:
        top.setdefault(token, _finite(logprob))
    top.setdefault(entry.token, _finite(entry.logprob))
    return top


def _finite(logprob: float) -> float:
    return max(logprob, LOWEST_LOGPROB)


async def stream_response(
    handles: Sequence[GenerationHandle], shape: Shape, to_api_error: Callable[[BaseException], ApiError]
) -> StreamingResponse:
    """Server-sent events of `handles`' text as it is generated (handle i is choice i); raises the
    first failure as an ApiError if it comes before any text (a later one becomes an `error` event
    ending the stream)."""
    events: asyncio.Queue[tuple[int, Piece | Generation | BaseException]] = asyncio.Queue()
    pumps = [asyncio.create_task(_pump(index, handle, events)) for index, handle in enumerate(handles)]

    def stop() -> None:
        for pump in pumps:
            pump.cancel()
        for handle in handles:
            handle.cancel()  # a running row leaves the batch at the next step

    first = await events.get()
    if isinstance(first[1], BaseException):
        stop()
        raise to_api_error(first[1])

    async def sse() -> AsyncIterator[str]:
        try:
            for index in range(len(handles)):
                chunk = shape.start_chunk(index)
                if chunk is not None:
                    yield _event(chunk)
            finished: dict[int, Generation] = {}
            index, item = first
            while True:
                if isinstance(item, Piece):
                    yield _event(shape.piece_chunk(index, item))
                elif isinstance(item, Generation):
                    yield _event(shape.end_chunk(index, item))
                    finished[index] = item
                    if len(finished) == len(handles):
                        if shape.include_usage:
                            yield _event(shape.usage_chunk([finished[i] for i in range(len(handles))]))
                        break
                else:
                    error = to_api_error(item)
                    yield _event(error_body(error.status, error.code, f"choice {index}: {error.message}"))
                    break
                index, item = await events.get()
            yield "data: [DONE]\n\n"
        finally:
            stop()

    return _Stream(sse(), stop, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class _Stream(StreamingResponse):
    """A StreamingResponse that gives its rows up (`stop`) as soon as it ends, however it ends: a
    client that hangs up makes starlette stop sending, and the event generator, left suspended,
    would only run its `finally` when garbage-collected."""

    def __init__(self, content: AsyncIterator[str], stop: Callable[[], None], **settings: object) -> None:
        super().__init__(content, **settings)
        self._stop = stop

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        """Send the stream; then (or on a hang-up, or an error) `stop()`."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stop()


async def _pump(index: int, handle: GenerationHandle, events: asyncio.Queue) -> None:
    """Move one generation's pieces, then its result (or its error), onto the shared queue."""
    try:
        async for piece in handle.stream:
            await events.put((index, piece))
        await events.put((index, await asyncio.wrap_future(handle.future)))
    except Exception as error:
        await events.put((index, error))


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
