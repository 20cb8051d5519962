"""OpenAI-shaped generation responses: whole bodies, and server-sent event streams of chunks.

    data: {"id": "cmpl-…", "object": "text_completion", "choices": [{"index": 0, "text": "Hel", …}]}
    data: {… "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}
    data: [DONE]

A stream interleaves its choices' pieces as the engine produces them. Nothing is sent until the
first piece (or the first error) arrives, so a request that fails before generating anything gets
a proper 4xx JSON error instead of a 200 stream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence

from fastapi.responses import StreamingResponse

from lorakit.serve.engine.generate import Generation, GenerationHandle
from lorakit.serve.http.errors import ApiError, error_body


class Shape:
    """How one endpoint's bodies look: `text_completion` (choices carry `text`) or `chat.completion`
    (choices carry `message`, stream chunks a `delta`)."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.model = model
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def body(self, generations: Sequence[Generation]) -> dict:
        """The whole response for finished generations, with token usage."""
        choices = []
        for index, generation in enumerate(generations):
            content = {"message": {"role": "assistant", "content": generation.text}} if self.chat else {}
            text = {} if self.chat else {"text": generation.text, "logprobs": None}
            choices.append({"index": index, **text, **content, "finish_reason": generation.finish_reason})
        prompt_tokens = sum(generation.prompt_tokens for generation in generations)
        completion_tokens = sum(generation.completion_tokens for generation in generations)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        return {**self._envelope(stream=False), "choices": choices, "usage": usage}

    def start_chunk(self, index: int) -> dict | None:
        """A chat stream opens each choice with the assistant role (as OpenAI does)."""
        return self._chunk(index, {"role": "assistant", "content": ""}, None) if self.chat else None

    def piece_chunk(self, index: int, text: str) -> dict:
        """A stream chunk carrying the next piece of choice `index`'s text."""
        return self._chunk(index, {"content": text} if self.chat else text, None)

    def end_chunk(self, index: int, generation: Generation) -> dict:
        """The stream chunk that ends choice `index`, with its finish_reason."""
        return self._chunk(index, {} if self.chat else "", generation.finish_reason)

    def _chunk(self, index: int, content: dict | str, finish_reason: str | None) -> dict:
        body = {"delta": content} if self.chat else {"text": content, "logprobs": None}
        choice = {"index": index, **body}
        return {**self._envelope(stream=True), "choices": [{**choice, "finish_reason": finish_reason}]}

    def _envelope(self, stream: bool) -> dict:
        kind = ("chat.completion.chunk" if stream else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


async def stream_response(
    handles: Sequence[GenerationHandle], shape: Shape, to_api_error: Callable[[BaseException], ApiError]
) -> StreamingResponse:
    """Server-sent events of `handles`' text as it is generated; raises the first failure as an
    ApiError if it comes before any text (a later one becomes an `error` event ending the stream)."""
    events: asyncio.Queue[tuple[int, str | Generation | BaseException]] = asyncio.Queue()
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
            finished, (index, item) = 0, first
            while True:
                if isinstance(item, str):
                    yield _event(shape.piece_chunk(index, item))
                elif isinstance(item, Generation):
                    yield _event(shape.end_chunk(index, item))
                    finished += 1
                    if finished == len(handles):
                        break
                else:
                    error = to_api_error(item)
                    yield _event(error_body(error.status, error.code, f"choice {index}: {error.message}"))
                    break
                index, item = await events.get()
            yield "data: [DONE]\n\n"
        finally:
            stop()

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


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
