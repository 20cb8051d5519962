"""Operations: `GET /health` (open without an API key, for load balancers) and `GET /metrics`
(Prometheus; a tenant needs the metrics permission)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from lorakit.serve.http.deps import EngineDep, HttpMetricsDep, TenantDep
from lorakit.serve.http.prometheus import CONTENT_TYPE, engine_lines, exposition

router = APIRouter()


@router.get("/health")
async def health(engine: EngineDep) -> dict:
    """`{"status": "ok", "model": base, "task_type": PEFT's name of what the server runs}`."""
    return {"status": "ok", "model": engine.registry.base_model, "task_type": engine.task_type}


@router.get("/metrics")
async def metrics(engine: EngineDep, http_metrics: HttpMetricsDep, tenant: TenantDep) -> PlainTextResponse:
    """The HTTP requests' counters and latencies, then the engine's batches, queue and adapters."""
    tenant.check_metrics()
    lines = http_metrics.render() + engine_lines(engine.metrics())
    return PlainTextResponse(exposition(lines), media_type=CONTENT_TYPE)
