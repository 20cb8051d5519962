"""`POST /v1/classify`: texts (and optional second texts) classified by one adapter, or the base
(`adapter` null; a tenant needs the base permission).

{"adapter": "sent", "inputs": ["w5 w6", "w9"]}
→ {"adapter": "sent", "results": [{"label": "pos", "probability": 0.9, "probabilities": {...}}, ...]}
"""

from __future__ import annotations

from fastapi import APIRouter

from lorakit.serve.http.calls import fetch_adapter, gather, require_kind, submit
from lorakit.serve.http.deps import EngineDep, LimitsDep, TenantDep
from lorakit.serve.http.schemas import ClassifyRequest
from lorakit.task_kind import TaskKind

router = APIRouter()


@router.post("/v1/classify")
async def classify(body: ClassifyRequest, engine: EngineDep, limits: LimitsDep, tenant: TenantDep) -> dict:
    """Every row to the engine on its own (rows share batches); results in the order of `inputs`."""
    require_kind(engine, TaskKind.CLASSIFICATION, "/v1/classify")
    limits.check_rows(len(body.inputs), "inputs")
    await fetch_adapter(engine, tenant, body.adapter)
    pairs = body.text_pairs or [None] * len(body.inputs)
    rows = list(zip(body.inputs, pairs, strict=True))
    futures = submit(lambda row: engine.submit_classify(body.adapter, *row), rows)
    return {"adapter": body.adapter, "results": await gather(futures, "inputs")}
