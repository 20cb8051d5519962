"""Handlers' calls into the engine, with every failure as an `ApiError` (see `errors`).

Rows are all submitted before any is awaited, so the rows of one request (and of other clients'
requests) share mixed-adapter batches; a row's failure names the row (`inputs[2]: ...`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from fastapi import Request

from lorakit.errors import LorakitError
from lorakit.serve.engine.adapters import AdapterInfo, is_name
from lorakit.serve.engine.engine import Engine
from lorakit.serve.engine.overload import DeadlineExceeded, QueueFull
from lorakit.serve.http.errors import ApiError, logger
from lorakit.serve.http.tenants import Tenant, unknown_adapter
from lorakit.task_kind import TaskKind

Row = TypeVar("Row")
T = TypeVar("T")


def require_kind(engine: Engine, kinds: TaskKind | tuple[TaskKind, ...], path: str) -> None:
    """Refuse (400 wrong_task) an endpoint that needs a model of one of `kinds` on a server running another."""
    kinds = (kinds,) if isinstance(kinds, TaskKind) else kinds
    if engine.kind not in kinds:
        needed = " or ".join(kind.peft_type for kind in kinds)
        message = (
            f"{path} needs a {needed} model; this server runs {engine.registry.base_model!r} as {engine.task_type}"
        )
        raise ApiError(400, "wrong_task", message)


async def fetch_adapter(engine: Engine, tenant: Tenant, name: str | None) -> AdapterInfo | None:
    """The adapter `tenant` asks for (None: the base model), loaded now if needed (in a thread:
    loading waits for the running batch).

    Raises:
        ApiError: 400 invalid_adapter_name, 403 base_model_forbidden, 404 adapter_not_found (also
            for an adapter outside the tenant's patterns), 409 adapter_unfit.
    """
    if name is None:
        tenant.check_base(engine.registry.base_model)
        return None
    tenant.check_adapter(name)
    try:
        return await asyncio.to_thread(engine.registry.get, name)
    except LorakitError as error:
        raise await _adapter_error(engine, name, error) from None


async def _adapter_error(engine: Engine, name: str, error: LorakitError) -> ApiError:
    if not is_name(name):
        return ApiError(400, "invalid_adapter_name", str(error))
    known = {entry["name"] for entry in await asyncio.to_thread(engine.registry.list)}
    if name not in known:
        return unknown_adapter(name)  # the registry's message names the server's folders
    return ApiError(409, "adapter_unfit", str(error))


def submit(submit_one: Callable[[Row], Any], rows: Sequence[Row]) -> list:
    """`submit_one(row)` for every row, all before any is awaited (so they can share a batch); if
    one is refused (bad input, queue full), the rows already submitted are cancelled."""
    submitted = []
    try:
        for row in rows:
            submitted.append(submit_one(row))
    except LorakitError as error:
        for handle in submitted:
            handle.cancel()  # a Future, or a GenerationHandle
        raise row_error(error) from None
    return submitted


async def unless_gone(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or HTTP 499 (nginx's "client closed request") as soon as the client
    disconnects; the work is then cancelled (cancel its engine rows in a `finally`)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not task.done():
        task.cancel()
        raise ApiError(499, "client_closed_request", "the client disconnected before the answer was ready")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body was read already: the next ASGI message is
    `http.disconnect`, which comes when the client goes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def gather(futures: Sequence[Future], field: str) -> list:
    """The futures' results, in order; the first failure (named by its row) as an ApiError."""
    outcomes = await asyncio.gather(*(asyncio.wrap_future(future) for future in futures), return_exceptions=True)
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            error = row_error(outcome)
            raise ApiError(error.status, error.code, f"{field}[{index}]: {error.message}")
    return outcomes


def row_error(error: BaseException) -> ApiError:
    """A row's failure: the queue full (503 with Retry-After), its deadline passed (504), bad input
    (another LorakitError: 400), else a server error (500, logged)."""
    if isinstance(error, QueueFull):
        return ApiError(503, "overloaded", str(error), headers={"Retry-After": str(error.retry_after)})
    if isinstance(error, DeadlineExceeded):
        return ApiError(504, "timeout", str(error))
    if isinstance(error, LorakitError):
        return ApiError(400, "invalid_input", str(error))
    logger.error("a row failed", exc_info=error)
    return ApiError(500, "internal_error", "internal server error; the server log has the details")
