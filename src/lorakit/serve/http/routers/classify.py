"""`POST /v1/classify`: texts (and optional second texts) classified by one adapter, or the base
(`adapter` null; a tenant needs the base permission).

{"adapter": "sent", "inputs": ["w5 w6", "w9"]}
→ {"adapter": "sent", "results": [{"label": "pos", "probability": 0.9, "probabilities": {...}}, ...]}

Without "adapter" the base model's own head classifies, unless the base has no trained head (a
published encoder): then a 400 asks for an adapter rather than answering from a random head.
"""

from __future__ import annotations

from fastapi import APIRouter

from lorakit.serve.engine.engine import Engine
from lorakit.serve.http.calls import fetch_adapter, gather, require_kind, submit
from lorakit.serve.http.deps import EngineDep, LimitsDep, TenantDep
from lorakit.serve.http.errors import ApiError
from lorakit.serve.http.schemas import ClassifyRequest
from lorakit.task_kind import TaskKind

router = APIRouter()


@router.post("/v1/classify")
async def classify(body: ClassifyRequest, engine: EngineDep, limits: LimitsDep, tenant: TenantDep) -> dict:
    """Every row to the engine on its own (rows share batches); results in the order of `inputs`."""
    require_kind(engine, TaskKind.CLASSIFICATION, "/v1/classify")
    limits.check_rows(len(body.inputs), "inputs")
    _check_texts(body)
    await fetch_adapter(engine, tenant, body.adapter)  # first: a tenant without the base gets its 403
    _check_adapter_named(engine, body.adapter)
    pairs = body.text_pairs or [None] * len(body.inputs)
    rows = list(zip(body.inputs, pairs, strict=True))
    futures = submit(lambda row: engine.submit_classify(body.adapter, *row), rows)
    return {"adapter": body.adapter, "results": await gather(futures, "inputs")}


def _check_texts(body: ClassifyRequest) -> None:
    """Refuse (400 invalid_input) an empty or blank text, named by its field and index."""
    for field, texts in (("inputs", body.inputs), ("text_pairs", body.text_pairs or [])):
        for index, text in enumerate(texts):
            if not text.strip():
                raise ApiError(400, "invalid_input", f"{field}[{index}] is blank; send some text to classify")


def _check_adapter_named(engine: Engine, adapter: str | None) -> None:
    """Refuse (400 adapter_required) a request without an adapter on a base without a trained head."""
    if adapter is None and engine.needs_adapter:
        message = (
            f"the base model {engine.registry.base_model!r} has no trained classifier head, so it cannot "
            'classify on its own; set "adapter" to one of this server\'s adapters (GET /v1/models lists them)'
        )
        raise ApiError(400, "adapter_required", message)
