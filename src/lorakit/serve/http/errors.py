"""Every failed HTTP request answers one JSON shape (OpenAI's), never a traceback:

    {"error": {"message": "adapter 'x' ...", "type": "invalid_request_error", "code": "adapter_not_found"}}

`install_handlers` routes FastAPI's own failures (malformed JSON, wrong types, unknown routes) and
unexpected exceptions (500, logged on the server) into that shape.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

logger = logging.getLogger("lorakit.serve")

ERROR_TYPES = {401: "authentication_error", 500: "server_error", 503: "server_error", 504: "server_error"}


class ApiError(Exception):
    """A request that cannot be served: HTTP `status`, a machine-readable `code`, a one-line
    `message`, and response `headers` (e.g. Retry-After)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(status: int, code: str, message: str) -> dict:
    """`{"error": {"message", "type", "code"}}`: the message's first line, OpenAI's error type for `status`."""
    first_line = message.strip().splitlines()[0] if message.strip() else code
    return {"error": {"message": first_line, "type": ERROR_TYPES.get(status, "invalid_request_error"), "code": code}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """`error_body` as a JSON response with `status` (and `headers`, e.g. WWW-Authenticate)."""
    return JSONResponse(error_body(status, code, message), status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that give FastAPI's and the app's failures the error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        if "json" not in request.headers.get("content-type", "json"):
            message = (
                f"send the body as JSON with 'Content-Type: application/json', not {request.headers['content-type']!r}"
            )
            return error_response(400, "invalid_json", message)
        return error_response(400, *validation_message(error.errors()))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 400 and error.__cause__ is not None:  # FastAPI's "error parsing the body"
            return error_response(400, "invalid_json", f"the request body is not valid JSON ({unreadable(error)})")
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = f"{request.method} {request.url.path}: {error.detail}"
        return error_response(error.status_code, codes.get(error.status_code, "http_error"), message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error; the server log has the details")


def unreadable(error: HTTPException) -> str:
    """Why FastAPI could not read a JSON body: what `json.loads` raised besides a syntax error."""
    cause = error.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return f"a byte that is not UTF-8 at position {cause.start}"
    if isinstance(cause, RecursionError):
        return "arrays or objects nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "an integer of more than 4,300 digits"
    return type(cause).__name__


def validation_message(errors: list[dict]) -> tuple[str, str]:
    """(code, one line) for pydantic's errors: the first problem, named by its field."""
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "parse error")
        return "invalid_json", f"the request body is not valid JSON ({reason})"
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return "invalid_request", f"{where}: {first.get('msg', 'invalid value')}{more}"
