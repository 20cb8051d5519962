"""The HTTP API over one `Engine`: classification, OpenAI-compatible generation, adapter management.

    POST /v1/classify          {"adapter": name|null, "inputs": [...], "text_pairs"?: [...]}
    POST /v1/completions       OpenAI: {"model": adapter|base, "prompt": str|[str], "max_tokens", "stream", ...}
    POST /v1/chat/completions  OpenAI: {"model", "messages": [{"role", "content"}], ...}
    GET  /v1/models            the base and every adapter (loaded, or waiting in the adapters folder)
    POST /v1/adapters          {"name"}: load from the adapters folder now (names only, never paths)
    DELETE /v1/adapters/{name} unload
    GET  /health · GET /metrics (Prometheus text)

Every row of every request goes to the engine's batcher on its own, so rows of one request and of
other clients' requests share mixed-adapter batches. Failures answer `{"error": {...}}` with a
4xx status (see `http_errors`): 400 bad request or input, 401 API key, 404 unknown adapter, 409 an
adapter that does not fit this server (another base or task) or is busy, 413 body too large.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

from lorakit.errors import LorakitError
from lorakit.serve.adapters import AdapterInfo, is_name
from lorakit.serve.engine import Engine
from lorakit.serve.http_errors import ApiError, install_handlers, logger
from lorakit.serve.middleware import BearerAuth, BodyLimit, RequestMetrics
from lorakit.serve.openai import Shape, stream_response
from lorakit.serve.prometheus import HttpMetrics, engine_lines, exposition
from lorakit.serve.schemas import AdapterLoadRequest, ChatRequest, ClassifyRequest, CompletionRequest, SamplingRequest
from lorakit.tasks.generation import prompt_text

DEFAULT_MAX_TOKENS = 64
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Limits:
    """What one request may ask: body bytes, rows (texts or prompts), and new tokens per row."""

    max_body_bytes: int = 1 << 20
    max_inputs: int = 64
    max_tokens: int = 512


def create_app(engine: Engine, *, api_key: str | None = None, limits: Limits = Limits()) -> FastAPI:
    """The FastAPI app serving `engine`; `api_key` (when set) is required on every path but /health.

    The caller owns the engine and closes it after the server stops.
    """
    app = FastAPI(title="lorakit serve", docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)
    http_metrics = HttpMetrics()
    base_id = engine.registry.base_model
    started = int(time.time())

    def adapter_for(model: str) -> str | None:
        """An OpenAI `model` field: the base's name means no adapter (it wins over a same-named adapter)."""
        return None if model == base_id else model

    async def fetch_adapter(name: str | None) -> AdapterInfo | None:
        """The adapter, loaded now if needed (in a thread: loading waits for the running batch)."""
        if name is None:
            return None
        try:
            return await asyncio.to_thread(engine.registry.get, name)
        except LorakitError as error:
            raise await adapter_error(name, error) from None

    async def adapter_error(name: str, error: LorakitError) -> ApiError:
        if not is_name(name):
            return ApiError(400, "invalid_adapter_name", str(error))
        known = {entry["name"] for entry in await asyncio.to_thread(engine.registry.list)}
        if name not in known:
            return ApiError(404, "adapter_not_found", str(error))
        return ApiError(409, "adapter_unfit", str(error))

    def require_task(task: str, path: str) -> None:
        if engine.task_type != task:
            message = f"{path} needs a {task} model; this server runs {base_id!r} as {engine.task_type}"
            raise ApiError(400, "wrong_task", message)

    def check_rows(count: int, field: str) -> None:
        if count > limits.max_inputs:
            message = f"{field} has {count} items; this server takes at most {limits.max_inputs} per request"
            raise ApiError(400, "too_many_inputs", message)

    def submit_generations(adapter: str | None, prompts: Sequence[str], body: SamplingRequest) -> list:
        max_tokens = body.max_tokens or min(DEFAULT_MAX_TOKENS, limits.max_tokens)
        if max_tokens > limits.max_tokens:
            message = f"max_tokens is {max_tokens}; this server allows at most {limits.max_tokens}"
            raise ApiError(400, "max_tokens_too_large", message)
        return submit(
            lambda prompt: engine.submit_generate(
                adapter, prompt, max_new_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p
            ),
            prompts,
        )

    async def generate(adapter: str | None, prompts: Sequence[str], body: SamplingRequest, chat: bool):
        handles = submit_generations(adapter, prompts, body)
        shape = Shape(chat=chat, model=body.model)
        if body.stream:
            return await stream_response(handles, shape, row_error)
        return shape.body(await gather([handle.future for handle in handles], "prompt"))

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": base_id, "task_type": engine.task_type}

    @app.post("/v1/classify")
    async def classify(body: ClassifyRequest) -> dict:
        require_task("SEQ_CLS", "/v1/classify")
        check_rows(len(body.inputs), "inputs")
        await fetch_adapter(body.adapter)
        pairs = body.text_pairs or [None] * len(body.inputs)
        rows = list(zip(body.inputs, pairs, strict=True))
        futures = submit(lambda row: engine.submit_classify(body.adapter, *row), rows)
        return {"adapter": body.adapter, "results": await gather(futures, "inputs")}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        require_task("CAUSAL_LM", "/v1/completions")
        check_rows(len(body.prompts), "prompt")
        adapter = adapter_for(body.model)
        await fetch_adapter(adapter)
        return await generate(adapter, body.prompts, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        require_task("CAUSAL_LM", "/v1/chat/completions")
        adapter = adapter_for(body.model)
        await fetch_adapter(adapter)
        messages = [message.model_dump() for message in body.messages]
        try:
            prompt = prompt_text(engine.tokenizer, messages, "causal-lm")
        except LorakitError as error:
            raise ApiError(400, "invalid_messages", str(error)) from None
        return await generate(adapter, [prompt], body, chat=True)

    @app.get("/v1/models")
    async def models() -> dict:
        base = {"id": base_id, "object": "model", "created": started, "owned_by": "lorakit"}
        data = [{**base, "task_type": engine.task_type, "loaded": True}]
        for entry in await asyncio.to_thread(engine.registry.list):
            data.append(
                {
                    **base,
                    "id": entry["name"],
                    "parent": base_id,
                    "loaded": entry["loaded"],
                    "task_type": entry["task_type"],
                    "label_names": entry["label_names"],
                }
            )
        return {"object": "list", "data": data}

    @app.post("/v1/adapters")
    async def load_adapter(body: AdapterLoadRequest) -> dict:
        info = await fetch_adapter(body.name)
        return {
            "name": info.name,
            "loaded": True,
            "task_type": info.task_type,
            "nbytes": info.nbytes,
            "label_names": list(info.label_names) if info.label_names else None,
            "quantize": info.quantize,
        }

    @app.delete("/v1/adapters/{name}")
    async def unload_adapter(name: str) -> dict:
        try:
            await asyncio.to_thread(engine.registry.unload, name)
        except LorakitError as error:
            if not is_name(name):
                raise ApiError(400, "invalid_adapter_name", str(error)) from None
            loaded = {entry["name"] for entry in await asyncio.to_thread(engine.registry.list) if entry["loaded"]}
            status, code = (409, "adapter_busy") if name in loaded else (404, "adapter_not_loaded")
            raise ApiError(status, code, str(error)) from None
        return {"name": name, "loaded": False}

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        lines = http_metrics.render() + engine_lines(engine.metrics())
        return PlainTextResponse(exposition(lines), media_type=PROMETHEUS_TYPE)

    # Added innermost first: metrics see every request, auth runs before the body is read.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)
    app.add_middleware(RequestMetrics, metrics=http_metrics, routes=lambda: app.routes)
    return app


def submit(submit_one, rows: Sequence) -> list:
    """`submit_one(row)` for every row, all before any is awaited (so they can share a batch)."""
    try:
        return [submit_one(row) for row in rows]
    except LorakitError as error:
        raise row_error(error) from None


async def gather(futures: Sequence[Future], field: str) -> list:
    """The futures' results, in order; the first failure (named by its row) as an ApiError."""
    outcomes = await asyncio.gather(*(asyncio.wrap_future(future) for future in futures), return_exceptions=True)
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            error = row_error(outcome)
            raise ApiError(error.status, error.code, f"{field}[{index}]: {error.message}")
    return outcomes


def row_error(error: BaseException) -> ApiError:
    """A row's failure: bad input (a LorakitError: 400), else a server error (500, logged)."""
    if isinstance(error, LorakitError):
        return ApiError(400, "invalid_input", str(error))
    logger.error("a row failed", exc_info=error)
    return ApiError(500, "internal_error", "internal server error; the server log has the details")
