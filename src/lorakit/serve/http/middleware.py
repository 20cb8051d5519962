"""ASGI middleware around the API: request metrics (outermost), API key → tenant, body size and time limits.

Pure ASGI (not Starlette's BaseHTTPMiddleware) so that a streamed response is timed to its last
byte and a refused request never reaches the app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    even when it was refused before reaching it (401, 408, 413), else "other" (404, 405). The
    tenant is the one `BearerAuth` found, else `NO_TENANT` (a server without keys, a refused key, /health).
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


DRAIN_BYTES = 64 << 20  # a refused body up to this size is read to its end before the answer


@dataclass
class _Body:
    """A request body as it arrives: the chunks kept (none once past the limit), the bytes
    received so far, and whether the client has sent its end."""

    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    ended: bool = False


class BodyLimit:
    """Read the whole request body before the app runs, within `max_bytes` and `timeout` seconds.

    Past `max_bytes`: 413. The rest of the body is still read and discarded, up to `drain_bytes`
    (64 MiB, or 4 × `max_bytes` if more) and within the same deadline, before the answer: a
    server that answers and closes while the client is still sending resets the connection, and
    clients that read nothing before they have sent everything (urllib, which asks for
    `Connection: close`) then see the reset instead of the 413. A body declared larger than
    `drain_bytes`, or one the client waits to send until told to go on (`Expect: 100-continue`), is
    refused at once, unread. A body not complete `timeout` seconds after the request's head (a
    client stalled mid-body): 408. Every refusal ends with `Connection: close`.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = max(DRAIN_BYTES, 4 * max_bytes)
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the whole body (408, 413 as above), then run the app on it replayed."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"")
        too_large = declared.isdigit() and int(declared) > self.max_bytes
        waits = headers.get(b"expect", b"").lower() == b"100-continue"  # sends nothing before "100 Continue"
        if too_large and (waits or int(declared) > self.drain_bytes):
            await self._too_large(scope, receive, send)
            return
        body = _Body()
        try:
            connected = await asyncio.wait_for(self._receive(receive, body), self.timeout)
        except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11
            connected = True
        if not connected:  # the client went away
            return
        if too_large or body.size > self.max_bytes:
            await self._too_large(scope, receive, send)
        elif not body.ended:
            message = f"the request body did not arrive within this server's {self.timeout:g} s; send it whole"
            await _refuse(408, "body_timeout", message, scope, receive, send)
        else:
            await self.app(scope, _replay(b"".join(body.chunks), receive), send)

    async def _receive(self, receive: Receive, body: _Body) -> bool:
        """Read into `body` until it ends or passes `drain_bytes`; False if the client went away."""
        while not body.ended and body.size <= self.drain_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return False
            chunk = message.get("body", b"")
            body.size += len(chunk)
            if body.size <= self.max_bytes:
                body.chunks.append(chunk)
            else:
                body.chunks.clear()  # read on only to discard
            body.ended = not message.get("more_body", False)
        return True

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is larger than this server's limit of {self.max_bytes:,} bytes"
        await _refuse(413, "body_too_large", message, scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body read, then passes on to the client's (disconnects)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(status: int, code: str, message: str, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer with the error shape, then close the connection (nothing more of it is read)."""
    await error_response(status, code, message, headers={"Connection": "close"})(scope, receive, send)
