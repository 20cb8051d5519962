"""Handlers' calls into the engine, with every failure as an `ApiError` (see `errors`).

Rows are all submitted before any is awaited, so the rows of one request (and of other clients'
requests) share mixed-adapter batches; a row's failure names the row (`inputs[2]: ...`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from lorakit.errors import LorakitError
from lorakit.serve.engine.adapters import AdapterInfo, is_name
from lorakit.serve.engine.engine import Engine
from lorakit.serve.http.errors import ApiError, logger
from lorakit.task_kind import TaskKind

Row = TypeVar("Row")


def require_kind(engine: Engine, kinds: TaskKind | tuple[TaskKind, ...], path: str) -> None:
    """Refuse (400 wrong_task) an endpoint that needs a model of one of `kinds` on a server running another."""
    kinds = (kinds,) if isinstance(kinds, TaskKind) else kinds
    if engine.kind not in kinds:
        needed = " or ".join(kind.peft_type for kind in kinds)
        message = (
            f"{path} needs a {needed} model; this server runs {engine.registry.base_model!r} as {engine.task_type}"
        )
        raise ApiError(400, "wrong_task", message)


async def fetch_adapter(engine: Engine, name: str | None) -> AdapterInfo | None:
    """The adapter, loaded now if needed (in a thread: loading waits for the running batch).

    Raises:
        ApiError: 400 invalid_adapter_name, 404 adapter_not_found, 409 adapter_unfit.
    """
    if name is None:
        return None
    try:
        return await asyncio.to_thread(engine.registry.get, name)
    except LorakitError as error:
        raise await _adapter_error(engine, name, error) from None


async def _adapter_error(engine: Engine, name: str, error: LorakitError) -> ApiError:
    if not is_name(name):
        return ApiError(400, "invalid_adapter_name", str(error))
    known = {entry["name"] for entry in await asyncio.to_thread(engine.registry.list)}
    if name not in known:
        return ApiError(404, "adapter_not_found", str(error))
    return ApiError(409, "adapter_unfit", str(error))


def submit(submit_one: Callable[[Row], Any], rows: Sequence[Row]) -> list:
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
