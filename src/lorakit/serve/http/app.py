"""The HTTP API over one `Engine`: classification, OpenAI-compatible generation, adapter management.

    POST /v1/classify          {"adapter": name|null, "inputs": [...], "text_pairs"?: [...]}
    POST /v1/completions       OpenAI: {"model": adapter|base, "prompt": str|[str], "max_tokens", "stream", ...}
    POST /v1/chat/completions  OpenAI: {"model", "messages": [{"role", "content"}], ...}
    GET  /v1/models            the base and every adapter (loaded, or waiting in the adapters folder) the key may use
    POST /v1/adapters          {"name"}: load from the adapters folder now (names only, never paths)
    DELETE /v1/adapters/{name} unload
    GET  /health · GET /metrics (Prometheus text)

Every row of every request goes to the engine's batcher on its own, so rows of one request and of
other clients' requests share mixed-adapter batches. Failures answer `{"error": {...}}` with a
4xx status (see `errors`): 400 bad request or input, 401 API key, 403 a permission the key lacks,
404 unknown adapter, 408 body too slow to arrive, 409 an adapter that does not fit this server
(another base or task) or is
busy, 413 body too large.

With API keys, each key is a tenant (`tenants`): the admin key (--api-key) may do everything, a
keys file's tenants what the file allows (403 for a permission they lack; 404, as for a missing
one, for an adapter outside their patterns).

    request ─► RequestMetrics ─► BearerAuth ─► BodyLimit ─► router ─► handler(body, Depends(engine, tenant, ...))
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastapi import FastAPI

from lorakit.serve.engine.engine import Engine
from lorakit.serve.http.errors import install_handlers
from lorakit.serve.http.keys import KeyTable, TenantKey, key_digest
from lorakit.serve.http.limits import DEFAULT_LIMITS, Limits
from lorakit.serve.http.middleware import BearerAuth, BodyLimit, RequestMetrics
from lorakit.serve.http.prometheus import HttpMetrics
from lorakit.serve.http.routers import classify, completions, models, status
from lorakit.serve.http.tenants import ADMIN

ROUTERS = (status.router, classify.router, completions.router, models.router)


def create_app(
    engine: Engine,
    *,
    api_key: str | None = None,
    tenant_keys: Sequence[TenantKey] = (),
    limits: Limits = DEFAULT_LIMITS,
) -> FastAPI:
    """The FastAPI app serving `engine`. With `api_key` (the admin's: everything allowed) or
    `tenant_keys` (`keys.read_keys_file`), one of those keys is required on every path but /health.

    The routers' handlers read the engine, `limits`, the HTTP metrics and the start time from
    `app.state` (`deps`). The caller owns the engine and closes it after the server stops.
    """
    app = FastAPI(title="lorakit serve", docs_url=None, redoc_url=None, openapi_url=None)
    install_handlers(app)
    http_metrics = HttpMetrics()
    app.state.engine = engine
    app.state.limits = limits
    app.state.http_metrics = http_metrics
    app.state.started = int(time.time())
    for router in ROUTERS:
        app.include_router(router)
    # Added innermost first: metrics see every request, auth runs before the body is read.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, timeout=limits.body_timeout)
    keys = [*tenant_keys, *([TenantKey(ADMIN, key_digest(api_key))] if api_key else [])]
    if keys:
        app.add_middleware(BearerAuth, keys=KeyTable(keys))
    # The routers' own routes: `app.routes` holds each included router as one entry, not its routes.
    routes = [route for router in ROUTERS for route in router.routes]
    app.add_middleware(RequestMetrics, metrics=http_metrics, routes=routes)
    return app
