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
4xx status (see `errors`): 400 bad request or input, 401 API key, 404 unknown adapter, 408 body
too slow to arrive, 409 an adapter that does not fit this server (another base or task) or is
busy, 413 body too large.

    request ─► RequestMetrics ─► BearerAuth ─► BodyLimit ─► router ─► handler(body, Depends(engine, limits, ...))
"""

from __future__ import annotations

import time

from fastapi import FastAPI

from lorakit.serve.engine.engine import Engine
from lorakit.serve.http.errors import install_handlers
from lorakit.serve.http.limits import DEFAULT_LIMITS, Limits
from lorakit.serve.http.middleware import BearerAuth, BodyLimit, RequestMetrics
from lorakit.serve.http.prometheus import HttpMetrics
from lorakit.serve.http.routers import classify, completions, models, status

ROUTERS = (status.router, classify.router, completions.router, models.router)


def create_app(engine: Engine, *, api_key: str | None = None, limits: Limits = DEFAULT_LIMITS) -> FastAPI:
    """The FastAPI app serving `engine`; `api_key` (when set) is required on every path but /health.

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
    if api_key:
        app.add_middleware(BearerAuth, api_key=api_key)
    # The routers' own routes: `app.routes` holds each included router as one entry, not its routes.
    routes = [route for router in ROUTERS for route in router.routes]
    app.add_middleware(RequestMetrics, metrics=http_metrics, routes=routes)
    return app
