"""The control application's HTTP surface: request models, error codes and the FastAPI app.

Errors answer ``{"error_code": <HTTP status * 100 + n>, "message": ...}`` like the ingest gateway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from app.contracts.command import Setpoints
from app.contracts.reading import ID_PATTERN

INVALID_REQUEST = 42201
INVALID_READINGS = 42211
NO_READINGS = 40411
MODEL_UNAVAILABLE = 50311
MAX_WINDOW_READINGS = 20_000


class ForecastRequest(BaseModel):
    """``POST /forecast``: one greenhouse, its window (or the followed topic's), a plan to hold."""

    model_config = ConfigDict(extra="forbid")

    greenhouse_id: str = Field(pattern=ID_PATTERN)
    readings: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_WINDOW_READINGS, description="the recent window; default: the followed sensor topic")
    plan: Setpoints | None = Field(default=None, description="actuator settings held over the horizons; default: the current ones")
    as_of: datetime | None = Field(default=None, description="use readings up to this instant (waits briefly for them to arrive)")


class ControlRequest(BaseModel):
    """``POST /control``: decide (and dispatch) one command for a greenhouse."""

    model_config = ConfigDict(extra="forbid")

    greenhouse_id: str = Field(pattern=ID_PATTERN)
    readings: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_WINDOW_READINGS)
    as_of: datetime | None = Field(default=None, description="decision time (default now); readings up to it are waited for briefly")
    dry_run: bool = False
    request_id: str | None = Field(default=None, max_length=100, description="makes distinct commands at the same instant; retries reuse it")


class ServeError(Exception):
    """An answer other than 200: status, error code and a short reason."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "message": message}, status_code=status)


def create_control_api() -> FastAPI:
    """The FastAPI app the control deployment serves (routes are the deployment's methods)."""
    api = FastAPI(title="Greenhouse forecast and control", version="1", description="Indoor climate forecasts and actuator commands.")

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()]
        return _error(422, INVALID_REQUEST, "; ".join(parts)[:2000])

    @api.exception_handler(ServeError)
    async def _serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message)

    return api
