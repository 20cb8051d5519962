"""ASGI middleware around the API: request metrics (outermost), API key → tenant, body-size limit.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so that a streamed response is timed to its last
byte and a refused request never reaches the app.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lorakit.serve.http.errors import error_response
from lorakit.serve.http.keys import KeyTable
from lorakit.serve.http.prometheus import HttpMetrics
from lorakit.serve.http.tenants import NO_TENANT

OPEN_PATHS = ("/health",)  # answered without an API key (load balancers probe it)


class RequestMetrics:
    """Count each HTTP request by endpoint (the route's template, e.g. `/v1/adapters/{name}`),
    status and tenant, and time it from arrival to the end of its response body.

    routes: the app's endpoints; a request is labelled by the one its method and path fully match,
    even when it was refused before reaching it (401, 413), else "other" (404, 405). The tenant is
    the one `BearerAuth` found, else `NO_TENANT` (a server without keys, a refused key, /health).
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, noting the response's status, and record the request when its body ends."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            tenant = scope.get("state", {}).get("tenant")
            name = tenant.name if tenant is not None else NO_TENANT
            self.metrics.observe(self._endpoint(scope), status, name, time.perf_counter() - start)

    def _endpoint(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
        return "other"  # unknown paths share one label, so clients cannot grow the metrics


class BearerAuth:
    """Require `Authorization: Bearer <key>` on every path but `OPEN_PATHS` (401 otherwise), the key
    one of `keys`; its tenant goes to `scope["state"]["tenant"]` (`deps.get_tenant` reads it there).

    The lookup takes the same time whichever key matched and wherever a key differs (`KeyTable.find`).
    """

    def __init__(self, app: ASGIApp, keys: KeyTable) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 401 without a known key; else run the app as the key's tenant."""
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, key = given.partition(b" ")
        tenant = self.keys.find(key) if scheme == b"Bearer" and key else None
        if tenant is None:
            message = "missing or wrong API key; send the header 'Authorization: Bearer <key>'"
            response = error_response(401, "invalid_api_key", message, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse (413) a request body larger than `max_bytes`: at once when Content-Length says so,
    else as soon as the chunks received pass it. The app then reads the buffered body."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole body (413 past `max_bytes`), then run the app on it replayed."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than this server's limit of {self.max_bytes:,} bytes"
        await error_response(413, "body_too_large", message)(scope, receive, send)
