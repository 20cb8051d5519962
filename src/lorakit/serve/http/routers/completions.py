"""OpenAI-compatible generation: `POST /v1/completions` and `POST /v1/chat/completions`.

The `model` field names an adapter, or the base model (its name wins over a same-named adapter; a
tenant needs the base permission). `"stream": true` answers server-sent events (see
`lorakit.serve.http.openai`). A causal LM continues the prompt; a seq2seq model reads it as its
encoder input and answers with its decoder. Every choice is one engine request: `n` per prompt,
choice `prompt_index * n + j` (as OpenAI), choice j seeded with `choice_seed(seed, j)`; all are
submitted before any is awaited, so they share batches. A client that hangs up gives its rows up.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from lorakit.errors import LorakitError
from lorakit.inference.generation import prompt_text
from lorakit.serve.engine.engine import Engine
from lorakit.serve.engine.generate import GenerationHandle, choice_seed
from lorakit.serve.http.calls import fetch_adapter, gather, require_kind, row_error, submit, unless_gone
from lorakit.serve.http.deps import EngineDep, LimitsDep, TenantDep
from lorakit.serve.http.errors import ApiError
from lorakit.serve.http.limits import Limits
from lorakit.serve.http.openai import Shape, stream_response
from lorakit.serve.http.schemas import ChatRequest, CompletionRequest
from lorakit.task_kind import TaskKind

router = APIRouter()
GENERATORS = tuple(kind for kind in TaskKind if kind.generates)  # causal LM, seq2seq


@router.post("/v1/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request, engine: EngineDep, limits: LimitsDep, tenant: TenantDep
) -> dict | StreamingResponse:
    """Complete each prompt as is (no chat template): `n` choices per prompt."""
    require_kind(engine, GENERATORS, "/v1/completions")
    limits.check_choices(len(body.prompts), body.n)
    for index, prompt in enumerate(body.prompts):
        if not prompt:  # refused here too (the decoder refuses it) so that a stream names its index
            raise ApiError(400, "invalid_input", f"prompt[{index}] is empty; send at least one token of text")
    adapter = adapter_for(engine, body.model)
    await fetch_adapter(engine, tenant, adapter)
    return await _generate(request, engine, limits, adapter, body.prompts, body, chat=False)


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatRequest, request: Request, engine: EngineDep, limits: LimitsDep, tenant: TenantDep
) -> dict | StreamingResponse:
    """Answer the conversation, rendered as training and `lorakit generate` render it: a causal LM's
    with the tokenizer's chat template, a seq2seq model's as plain text (`User: ...`; a lone user
    message as its content), its encoder input."""
    require_kind(engine, GENERATORS, "/v1/chat/completions")
    limits.check_choices(1, body.n)
    adapter = adapter_for(engine, body.model)
    await fetch_adapter(engine, tenant, adapter)
    messages = [message.model_dump() for message in body.messages]
    try:
        prompt = prompt_text(engine.tokenizer, messages, engine.kind)
    except LorakitError as error:
        raise ApiError(400, "invalid_messages", str(error)) from None
    return await _generate(request, engine, limits, adapter, [prompt], body, chat=True)


def adapter_for(engine: Engine, model: str) -> str | None:
    """An OpenAI `model` field: the base's name means no adapter (it wins over a same-named adapter)."""
    return None if model == engine.registry.base_model else model


async def _generate(
    request: Request,
    engine: Engine,
    limits: Limits,
    adapter: str | None,
    prompts: Sequence[str],
    body: CompletionRequest | ChatRequest,
    chat: bool,
) -> dict | StreamingResponse:
    """Submit `n` choices of every prompt, then the whole body, or its event stream when
    `body.stream`. If the client disconnects, or one choice fails, the other rows are given up at once."""
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
    futures = [handle.future for handle in handles]
    try:
        generations = await unless_gone(request, gather(futures, "prompt" if body.n == 1 else "choice"))
    except ApiError:
        for handle in handles:
            handle.cancel()
        raise
    return shape.body(generations)
