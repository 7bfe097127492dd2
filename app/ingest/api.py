"""HTTP layer of the ingest gateway: a FastAPI app around an :class:`IngestService`.

Routes (Kafka REST Proxy v2 subset; every one but the probes, stats and OpenAPI needs a device credential):

- ``POST /topics/{topic}``: produce records (``application/vnd.kafka.json.v2+json`` or
  ``application/vnd.kafka.binary.v2+json``).
- ``GET /topics``, ``GET /topics/{topic}``: the topics devices may produce to.
- ``GET /healthz``: liveness (and the dependencies as last checked); ``GET /readyz``: readiness,
  503 naming the dependency that does not answer; ``GET /stats``: counters since start.
- ``GET /openapi.json``, ``/docs``: the OpenAPI document.
- REST Proxy v3 produce, ``POST /v3/clusters/{cluster_id}/topics/{topic}/records`` (streaming
  too): :mod:`app.ingest.api_v3`, on the same service and credentials.

A credential is ``Authorization: Bearer <device token>``, or a client certificate the TLS edge
verified (:mod:`app.security.edge`; trusted only with the edge's secret header). The OpenAPI
document (:mod:`app.ingest.openapi`) describes exactly what is answered (media types, every status
and header), so that a client generated from it works.

Routing errors (404 for a path with no route, 405 with an ``Allow`` header for a method the path
does not answer) come in the error shape of the API the path belongs to: ``{"error_code": 40400 or
40501, "message"}`` in v2's media type, or under ``/v3/`` ``{"error_code": 404 or 405, "message"}``
in ``application/json``. A refused credential is counted by reason in ``/stats``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal, Protocol

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.contracts.reading import Reading
from app.ingest import errors
from app.ingest.api_v3 import V3_REQUEST_MODELS, add_v3_routes, is_v3_path, v3_error_answer
from app.ingest.gateway import BINARY_V2, JSON_V2, RESPONSE_MEDIA_TYPE, IngestResponse, IngestService, request_error, unauthorized
from app.ingest.offload import Offload
from app.ingest.openapi import SECURITY, ErrorResponse, error_response, install_openapi, ref
from app.security.credentials import DeviceIdentity
from app.security.edge import client_device


class KafkaResponse(JSONResponse):
    """A JSON body (orjson) in the REST Proxy's own media type."""

    media_type = RESPONSE_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ProduceRecord(BaseModel):
    """One record of the JSON embedded format: ``value`` is a reading."""

    key: Any | None = Field(default=None, description="ignored: the key is always the reading's greenhouse_id")
    value: Reading = Field(description="a sensor reading (contract v1); one that breaks the contract is rejected per record (42206)")
    partition: Annotated[int, Field(ge=0)] | None = Field(default=None, description="optional; only the greenhouse's own partition is accepted (else 40304)")


class ProduceRequest(BaseModel):
    """A produce request in the JSON embedded format."""

    records: list[ProduceRecord] = Field(min_length=1, description="at most ingest.max_records_per_request (else 413/41302)")


class BinaryProduceRecord(BaseModel):
    """One record of the binary embedded format: ``value`` is base64 of a reading's JSON."""

    key: Any | None = Field(default=None, description="ignored: the key is always the reading's greenhouse_id")
    value: str = Field(description="base64 of a sensor reading's JSON (42203 when it is not)")
    partition: Annotated[int, Field(ge=0)] | None = Field(default=None, description="optional; only the greenhouse's own partition is accepted (else 40304)")


class BinaryProduceRequest(BaseModel):
    """A produce request in the binary embedded format."""

    records: list[BinaryProduceRecord] = Field(min_length=1, description="at most ingest.max_records_per_request (else 413/41302)")


class RecordOffset(BaseModel):
    """Where one record went, or why it was not accepted."""

    partition: int | None
    offset: int | None
    error_code: int | None = Field(description="null when accepted; else 40302-40304, 40402, 42203, 42206, 50002 or 50003")
    error: str | None


class ProduceResponse(BaseModel):
    """The answer to a produce request with at least one record accepted."""

    key_schema_id: int | None = None
    value_schema_id: int | None = None
    offsets: list[RecordOffset]


class RejectedResponse(BaseModel):
    """A request whose records were all rejected (per-record results in ``offsets``), or, without
    ``offsets``, one that was refused before its records were read."""

    error_code: int
    message: str
    key_schema_id: int | None = None
    value_schema_id: int | None = None
    offsets: list[RecordOffset] | None = None


class PartitionInfo(BaseModel):
    partition: int
    leader: int
    replicas: list[Any]


class TopicInfo(BaseModel):
    name: str
    configs: dict[str, Any]
    partitions: list[PartitionInfo]


class DependencyHealth(BaseModel):
    """One dependency as its last check found it."""

    ok: bool | None = Field(description="whether it answered its last check (null: not checked yet)")
    since: datetime | None = Field(description="when it stopped answering (its first failed check in a row); null while it answers")
    reason: str | None = Field(description="why it is not ok, in a few words")
    checked_at: datetime | None = Field(description="when it was last checked (checks are cached for a few seconds)")


class ReadinessVerdict(BaseModel):
    """Whether the gateway can accept readings: the bus and the metadata store answer."""

    ready: bool
    dependencies: dict[str, DependencyHealth] = Field(description="bus, metadata")


class Health(ReadinessVerdict):
    """Liveness: the process runs; the dependencies as last checked (a check is never waited for)."""

    status: Literal["ok"]


class Probes(Protocol):
    """What answers ``/healthz`` and ``/readyz`` (:class:`app.serve.readiness.Readiness`)."""

    async def verdict(self) -> dict[str, Any]: ...

    def last_known(self) -> dict[str, Any]: ...


class NoProbes:
    """No dependency checks (a bare :func:`create_api` in tests and the bench): always ready."""

    async def verdict(self) -> dict[str, Any]:
        return self.last_known()

    def last_known(self) -> dict[str, Any]:
        return {"ready": True, "dependencies": {}}


class Stats(BaseModel):
    """Counters since this replica started (v2 and v3 alike)."""

    requests: int = Field(description="produce requests that passed the request-level checks")
    accepted: int = Field(description="records written to the bus")
    rejected: int = Field(description="records not written")
    rejected_by_reason: dict[str, int] = Field(description="rejected records by reason (the field at fault)")
    unauthorized: int = Field(description="requests answered 401, on any route")
    unauthorized_by_reason: dict[str, int] = Field(description="401 answers by reason: missing_credential, malformed_authorization, invalid_token, invalid_certificate")


_REQUEST_MODELS = (ProduceRequest, BinaryProduceRequest, *V3_REQUEST_MODELS)
_error = partial(error_response, model=ErrorResponse)


_UNAUTHORIZED = _error(401, errors.DESCRIPTIONS[errors.UNAUTHORIZED])
_TOPIC_NOT_FOUND = _error(404, errors.DESCRIPTIONS[errors.TOPIC_NOT_FOUND])
_PRODUCE_RESPONSES: dict[int | str, dict[str, Any]] = dict(
    [
        _error(400, errors.DESCRIPTIONS[errors.MALFORMED_JSON]),
        _UNAUTHORIZED,
        _error(403, "no record accepted and at least one not authorized for the credential (40302 greenhouse, 40303 device, 40304 partition); per-record results in offsets", model=RejectedResponse),
        _TOPIC_NOT_FOUND,
        _error(406, errors.DESCRIPTIONS[errors.NOT_ACCEPTABLE]),
        _error(413, "body or record count over the limit (41301, 41302)"),
        _error(415, errors.DESCRIPTIONS[errors.UNSUPPORTED_MEDIA_TYPE]),
        _error(422, "payload invalid or no record accepted (42206); per-record results in offsets when present", model=RejectedResponse),
        _error(503, errors.DESCRIPTIONS[errors.BUS_UNAVAILABLE]),
    ]
)


def _respond(result: IngestResponse) -> Response:
    return KafkaResponse(content=result.body, status_code=result.status, headers=result.headers or None)


def create_api(service: IngestService, *, edge_secret: bytes | Callable[[], bytes | None] | None = None, probes: Probes | None = None) -> FastAPI:
    """The FastAPI app serving ``service`` (used by Ray Serve and by plain uvicorn alike).

    ``edge_secret``: the TLS edge's secret (:func:`app.security.edge.read_edge_secret`), or a
    function returning it (the edge may make it after the gateway starts); without it,
    client-certificate identities from the edge are not trusted. ``probes``: the dependency
    checks behind ``/healthz`` and ``/readyz`` (:func:`app.serve.ingest.gateway_readiness`);
    without them the gateway reports itself ready."""
    secret_of = edge_secret if callable(edge_secret) else lambda: edge_secret
    probes = probes or NoProbes()
    offload = Offload()
    api = FastAPI(title="Greenhouse ingest gateway", version="1", description="Kafka REST Proxy v2 compatible produce API for greenhouse sensor readings.", default_response_class=KafkaResponse)

    def identify(request: Request) -> DeviceIdentity | None:
        headers = request.headers
        return service.authenticate(headers.get("authorization"), client_device(headers, secret_of()))

    @api.post(
        "/topics/{topic}",
        response_model=ProduceResponse,
        responses=_PRODUCE_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {JSON_V2: {"schema": ref(ProduceRequest)}, BINARY_V2: {"schema": ref(BinaryProduceRequest)}}}, "security": SECURITY},
        summary="Produce sensor readings to a topic",
    )
    async def produce(topic: str, request: Request) -> Response:
        identity = identify(request)
        if identity is None:
            return _respond(unauthorized())
        headers = request.headers
        length_header = headers.get("content-length")
        content_length = int(length_header) if length_header and length_header.isdigit() else None
        early = service.check_request(topic, headers.get("content-type"), content_length, headers.get("accept"))
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
        result = await offload(service.produce_as, identity, topic, b"".join(chunks), content_type=headers.get("content-type"), accept=headers.get("accept"))
        return _respond(result)

    @api.get("/topics", summary="Topics devices may produce to", response_model=list[str], responses=dict([_UNAUTHORIZED]), openapi_extra={"security": SECURITY})
    async def list_topics(request: Request) -> Response:
        if identify(request) is None:
            return _respond(unauthorized())
        return _respond(IngestResponse(200, service.settings.ingest.topics))

    @api.get("/topics/{topic}", summary="Topic metadata", response_model=TopicInfo, responses=dict([_UNAUTHORIZED, _TOPIC_NOT_FOUND]), openapi_extra={"security": SECURITY})
    async def topic_info(topic: str, request: Request) -> Response:
        if identify(request) is None:
            return _respond(unauthorized())
        return _respond(await offload(service.topic_info, topic))

    add_v3_routes(api, service, identify, offload)

    @api.get("/healthz", summary="Liveness, with the dependencies as last checked", response_model=Health)
    async def healthz() -> Response:
        return _respond(IngestResponse(200, {"status": "ok", **probes.last_known()}))

    @api.get(
        "/readyz",
        summary="Readiness: whether the bus and the metadata store answer",
        response_model=ReadinessVerdict,
        responses={503: {"model": ReadinessVerdict, "description": "not ready: a dependency does not answer (which, why and since when)"}},
    )
    async def readyz() -> Response:
        verdict = await probes.verdict()
        return _respond(IngestResponse(200 if verdict["ready"] else 503, verdict))

    @api.get("/stats", summary="Counters since this replica started", response_model=Stats)
    async def stats() -> Response:
        return _respond(IngestResponse(200, service.stats.snapshot()))

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Routing errors (404 no route, 405) in the error shape of the path's API, v2 or v3."""
        return _routing_error(api, request, exc)

    install_openapi(api, service.settings, _REQUEST_MODELS)
    return api


def _routing_error(api: FastAPI, request: Request, exc: StarletteHTTPException) -> Response:
    """One answer for both APIs: the v2 envelope, turned into v3's shape on a v3 path; a 405
    names every method the path allows."""
    headers = dict(exc.headers or {})
    code = exc.status_code * 100  # e.g. 40400: no such route (40401 means no such topic)
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(_allowed_methods(api, request))
        code = errors.METHOD_NOT_ALLOWED
    result = IngestResponse(exc.status_code, {"error_code": code, "message": str(exc.detail)}, headers)
    return v3_error_answer(result) if is_v3_path(request.scope) else _respond(result)


def _allowed_methods(api: FastAPI, request: Request) -> list[str]:
    """Every method some route of ``request``'s path answers (Starlette names only the first
    route that matched the path)."""
    methods: set[str] = set()
    for route in api.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:
            methods.update(route_methods)
    return sorted(methods)
