"""What the handlers depend on, as FastAPI dependencies read from `app.state` (set by `create_app`),
and the request's tenant from the request's own state (set by `middleware.BearerAuth`).

    @router.post("/v1/classify")
    async def classify(body: ClassifyRequest, engine: EngineDep, limits: LimitsDep, tenant: TenantDep) -> dict: ...

A router mounted on its own (a test) sets `app.state` the same way, or replaces a dependency:
`app.dependency_overrides[get_engine] = lambda: stand_in`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lorakit.serve.engine.engine import Engine
from lorakit.serve.http.limits import Limits
from lorakit.serve.http.prometheus import HttpMetrics
from lorakit.serve.http.tenants import OPEN, Tenant


def get_engine(request: Request) -> Engine:
    """The engine the app serves (`app.state.engine`)."""
    return request.app.state.engine


def get_limits(request: Request) -> Limits:
    """What one request may ask (`app.state.limits`)."""
    return request.app.state.limits


def get_http_metrics(request: Request) -> HttpMetrics:
    """The app's request counters and latencies (`app.state.http_metrics`), filled by `RequestMetrics`."""
    return request.app.state.http_metrics


def get_started(request: Request) -> int:
    """When the app was created, in Unix seconds (`app.state.started`): the `created` of /v1/models."""
    return request.app.state.started


def get_tenant(request: Request) -> Tenant:
    """Who the request acts for: the tenant of its API key (`scope["state"]["tenant"]`), or `OPEN`
    (everything allowed) on a server without keys, where no `BearerAuth` runs."""
    return getattr(request.state, "tenant", OPEN)


EngineDep = Annotated[Engine, Depends(get_engine)]
LimitsDep = Annotated[Limits, Depends(get_limits)]
HttpMetricsDep = Annotated[HttpMetrics, Depends(get_http_metrics)]
StartedDep = Annotated[int, Depends(get_started)]
TenantDep = Annotated[Tenant, Depends(get_tenant)]
