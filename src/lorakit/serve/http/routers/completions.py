"""OpenAI-compatible generation: `POST /v1/completions` and `POST /v1/chat/completions`.

The `model` field names an adapter, or the base model (its name wins over a same-named adapter).
`"stream": true` answers server-sent events (see `lorakit.serve.http.openai`). Every choice is
one engine request: `n` per prompt, choice `prompt_index * n + j` (as OpenAI), choice j seeded
with `choice_seed(seed, j)`; all are submitted before any is awaited, so they share batches.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from lorakit.errors import LorakitError
from lorakit.inference.generation import prompt_text
from lorakit.serve.engine.engine import Engine
from lorakit.serve.engine.generate import GenerationHandle, choice_seed
from lorakit.serve.http.calls import fetch_adapter, gather, require_kind, row_error, submit
from lorakit.serve.http.deps import EngineDep, LimitsDep
from lorakit.serve.http.errors import ApiError
from lorakit.serve.http.limits import Limits
from lorakit.serve.http.openai import Shape, stream_response
from lorakit.serve.http.schemas import ChatRequest, CompletionRequest
from lorakit.task_kind import TaskKind

router = APIRouter()


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, engine: EngineDep, limits: LimitsDep) -> dict | StreamingResponse:
    """Complete each prompt as is (no chat template): `n` choices per prompt."""
    require_kind(engine, TaskKind.CAUSAL_LM, "/v1/completions")
    limits.check_choices(len(body.prompts), body.n)
    adapter = adapter_for(engine, body.model)
    await fetch_adapter(engine, adapter)
    return await _generate(engine, limits, adapter, body.prompts, body, chat=False)


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, engine: EngineDep, limits: LimitsDep) -> dict | StreamingResponse:
    """Answer the conversation, rendered with the tokenizer's chat template (as `lorakit generate`)."""
    require_kind(engine, TaskKind.CAUSAL_LM, "/v1/chat/completions")
    limits.check_choices(1, body.n)
    adapter = adapter_for(engine, body.model)
    await fetch_adapter(engine, adapter)
    messages = [message.model_dump() for message in body.messages]
    try:
        prompt = prompt_text(engine.tokenizer, messages, TaskKind.CAUSAL_LM)
    except LorakitError as error:
        raise ApiError(400, "invalid_messages", str(error)) from None
    return await _generate(engine, limits, adapter, [prompt], body, chat=True)


def adapter_for(engine: Engine, model: str) -> str | None:
    """An OpenAI `model` field: the base's name means no adapter (it wins over a same-named adapter)."""
    return None if model == engine.registry.base_model else model


async def _generate(
    engine: Engine,
    limits: Limits,
    adapter: str | None,
    prompts: Sequence[str],
    body: CompletionRequest | ChatRequest,
    chat: bool,
) -> dict | StreamingResponse:
    """Submit `n` choices of every prompt, then the whole body, or its event stream when `body.stream`."""
    new_tokens = limits.new_tokens(*body.token_limit)
    sampling = {"max_new_tokens": new_tokens, "temperature": body.temperature, "top_p": body.top_p}
    asked = {"stop": body.stops, "top_logprobs": body.alternatives}

    def submit_one(choice: tuple[str, int]) -> GenerationHandle:
        prompt, j = choice
        return engine.submit_generate(adapter, prompt, **sampling, seed=choice_seed(body.seed, j), **asked)

    handles = submit(submit_one, [(prompt, j) for prompt in prompts for j in range(body.n)])
    logprobs = body.alternatives is not None
    shape = Shape(chat=chat, model=body.model, n=body.n, logprobs=logprobs, include_usage=body.include_usage)
    if body.stream:
        return await stream_response(handles, shape, row_error)
    return shape.body(await gather([handle.future for handle in handles], "prompt" if body.n == 1 else "choice"))
