"""HTTP layer of the ingest gateway: a FastAPI app around an :class:`IngestService`.

Routes (Kafka REST Proxy v2 subset):

- ``POST /topics/{topic}``: produce records (``application/vnd.kafka.json.v2+json`` or
  ``application/vnd.kafka.binary.v2+json``).
- ``GET /topics``, ``GET /topics/{topic}``: the topics devices may produce to.
- ``GET /healthz``: liveness; ``GET /stats``: counters since start.
- ``GET /openapi.json``, ``/docs``: the OpenAPI document.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.ingest import errors
from app.ingest.gateway import BINARY_V2, JSON_V2, RESPONSE_MEDIA_TYPE, IngestResponse, IngestService, request_error


class ProduceRecord(BaseModel):
    """One record: ``value`` is a reading (JSON) or base64 of its JSON (binary)."""

    key: Any | None = Field(default=None, description="ignored: the key is always the reading's greenhouse_id")
    value: Any = Field(description="a sensor reading (contract v1), or base64 of its JSON for the binary format")
    partition: int | None = Field(default=None, ge=0, description="optional explicit partition")


class ProduceRequest(BaseModel):
    records: list[ProduceRecord] = Field(min_length=1)


class RecordOffset(BaseModel):
    partition: int | None
    offset: int | None
    error_code: int | None
    error: str | None


class ProduceResponse(BaseModel):
    key_schema_id: int | None = None
    value_schema_id: int | None = None
    offsets: list[RecordOffset]
    error_code: int | None = Field(default=None, description="set (42206) only when no record was accepted")
    message: str | None = None


class ErrorResponse(BaseModel):
    error_code: int
    message: str


def _respond(result: IngestResponse) -> Response:
    return Response(content=orjson.dumps(result.body), status_code=result.status, media_type=RESPONSE_MEDIA_TYPE)


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": desc}
    for status, desc in [
        (400, errors.DESCRIPTIONS[errors.MALFORMED_JSON]),
        (401, errors.DESCRIPTIONS[errors.UNAUTHORIZED]),
        (404, errors.DESCRIPTIONS[errors.TOPIC_NOT_FOUND]),
        (406, errors.DESCRIPTIONS[errors.NOT_ACCEPTABLE]),
        (413, "body or record count over the limit (41301, 41302)"),
        (415, errors.DESCRIPTIONS[errors.UNSUPPORTED_MEDIA_TYPE]),
        (422, "payload invalid or no record accepted (42206); per-record results in offsets when present"),
        (503, errors.DESCRIPTIONS[errors.BUS_UNAVAILABLE]),
    ]
}


def create_api(service: IngestService) -> FastAPI:
    """The FastAPI app serving ``service`` (used by Ray Serve and by plain uvicorn alike)."""
    api = FastAPI(title="Greenhouse ingest gateway", version="1", description="Kafka REST Proxy v2 compatible produce API for greenhouse sensor readings.")
    request_schema = ProduceRequest.model_json_schema(ref_template="#/components/schemas/{model}")

    @api.post(
        "/topics/{topic}",
        response_model=ProduceResponse,
        responses=_ERROR_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {JSON_V2: {"schema": request_schema}, BINARY_V2: {"schema": request_schema}}}},
        summary="Produce sensor readings to a topic",
    )
    async def produce(topic: str, request: Request) -> Response:
        headers = request.headers
        length_header = headers.get("content-length")
        content_length = int(length_header) if length_header and length_header.isdigit() else None
        early = service.check_headers(topic, headers.get("content-type"), content_length, headers.get("accept"), headers.get("authorization"))
        if early:
            return _respond(early)
        limit = service.settings.ingest.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # bounded read: chunked bodies have no Content-Length
            size += len(chunk)
            if size > limit:
                return _respond(request_error(413, errors.BODY_TOO_LARGE, f"request body exceeds {limit} bytes"))
            chunks.append(chunk)
        result = await run_in_threadpool(service.produce, topic, b"".join(chunks), content_type=headers.get("content-type"), accept=headers.get("accept"), authorization=headers.get("authorization"))
        return _respond(result)

    @api.get("/topics", summary="Topics devices may produce to")
    async def list_topics(request: Request) -> Response:
        denied = service.check_auth(request.headers.get("authorization"))
        if denied:
            return _respond(denied)
        return _respond(IngestResponse(200, service.settings.ingest.topics))  # type: ignore[arg-type]

    @api.get("/topics/{topic}", summary="Topic metadata", responses=_ERROR_RESPONSES)
    async def topic_info(topic: str, request: Request) -> Response:
        denied = service.check_auth(request.headers.get("authorization"))
        if denied:
            return _respond(denied)
        return _respond(await run_in_threadpool(service.topic_info, topic))

    @api.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/stats", summary="Counters since this replica started")
    async def stats() -> dict[str, Any]:
        s = service.stats
        return {"requests": s.requests, "accepted": s.accepted, "rejected": s.rejected, "rejected_by_reason": dict(s.rejected_by_reason)}

    return api
