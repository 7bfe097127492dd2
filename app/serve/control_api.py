"""The control application's HTTP surface: request models, error codes and the FastAPI app.

Errors answer ``{"error_code": <HTTP status * 100 + n>, "message": ...}`` like the ingest gateway,
with a short reason and never an exception's text. Every route but ``/healthz`` needs an operator's
bearer token (:mod:`app.serve.control_auth` says which scope).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.contracts.command import Setpoints
from app.contracts.reading import ID_PATTERN

UNAUTHENTICATED = 40101
MISSING_SCOPE = 40311
NO_READINGS = 40411
BODY_TOO_LARGE = 41301
INVALID_REQUEST = 42201
INVALID_READINGS = 42211
INTERNAL_ERROR = 50001
MODEL_UNAVAILABLE = 50311
DISPATCH_FAILED = 50321  # the decision stands, its command did not reach the control topic: retry
MAX_WINDOW_READINGS = 20_000
MAX_BODY_BYTES = 8 * 1024 * 1024  # a full window of readings is about 4 MB of JSON

log = logging.getLogger(__name__)


class ForecastRequest(BaseModel):
    """``POST /forecast``: one greenhouse, its window (or the followed topic's), a plan to hold."""

    model_config = ConfigDict(extra="forbid")

    greenhouse_id: str = Field(pattern=ID_PATTERN)
    readings: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_WINDOW_READINGS, description="the recent window; default: the followed sensor topic")
    plan: Setpoints | None = Field(default=None, description="actuator settings held over the horizons; default: the current ones")
    as_of: AwareDatetime | None = Field(default=None, description="use readings up to this instant (waits briefly for them to arrive); needs a UTC offset")


class ControlRequest(BaseModel):
    """``POST /control``: decide (and dispatch) one command for a greenhouse."""

    model_config = ConfigDict(extra="forbid")

    greenhouse_id: str = Field(pattern=ID_PATTERN)
    readings: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_WINDOW_READINGS)
    as_of: AwareDatetime | None = Field(default=None, description="decision time (default now; needs a UTC offset); readings up to it are waited for briefly")
    dry_run: bool = False
    request_id: str | None = Field(default=None, max_length=100, description="makes distinct commands at the same instant; retries reuse it")


class ServeError(Exception):
    """An answer other than 200: status, error code and a short reason."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` answers 413 before it is read into
    memory (by its Content-Length, or while a chunked body streams in)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _error(413, BODY_TOO_LARGE, f"request body exceeds {self.max_bytes} bytes")(scope, receive, send)


class _TooLarge(Exception):
    pass


def create_control_api() -> FastAPI:
    """The FastAPI app the control deployment serves (routes are the deployment's methods)."""
    api = FastAPI(title="Greenhouse forecast and control", version="1", description="Indoor climate forecasts and actuator commands.")
    api.add_middleware(BodyLimit)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        return _error(422, INVALID_REQUEST, "; ".join(parts)[:2000])

    @api.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # the reason stays in the replica's log: exception text can carry paths, URLs or data
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return _error(500, INTERNAL_ERROR, "internal error (logged by the replica)")

    return api
