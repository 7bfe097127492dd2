"""HTTP layer of the ingest gateway: a FastAPI app around an :class:`IngestService`.

Routes (Kafka REST Proxy v2 subset; every one but the last two needs a device credential):

- ``POST /topics/{topic}``: produce records (``application/vnd.kafka.json.v2+json`` or
  ``application/vnd.kafka.binary.v2+json``).
- ``GET /topics``, ``GET /topics/{topic}``: the topics devices may produce to.
- ``GET /healthz``: liveness; ``GET /stats``: counters since start.
- ``GET /openapi.json``, ``/docs``: the OpenAPI document.
- REST Proxy v3 produce, ``POST /v3/clusters/{cluster_id}/topics/{topic}/records`` (streaming
  too): :mod:`app.ingest.api_v3`, on the same service and credentials.

A credential is ``Authorization: Bearer <device token>``, or a client certificate the TLS edge
verified (:mod:`app.security.edge`; trusted only with the edge's secret header). The OpenAPI
document describes exactly what is answered (media types, every status, the ``Allow`` header of a
405), so that a client generated from it works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.contracts.reading import Reading
from app.ingest import errors
from app.ingest.api_v3 import add_v3_routes
from app.ingest.gateway import BINARY_V2, JSON_V2, RESPONSE_MEDIA_TYPE, WWW_AUTHENTICATE, IngestResponse, IngestService, request_error, unauthorized
from app.ingest.offload import Offload
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


class ErrorResponse(BaseModel):
    """A request-level error."""

    error_code: int
    message: str


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


class Health(BaseModel):
    status: Literal["ok"]


class Stats(BaseModel):
    requests: int
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int]


_SECURITY: list[dict[str, list[str]]] = [{"deviceToken": []}, {"deviceCertificate": []}]
_SECURITY_SCHEMES = {
    "deviceToken": {"type": "http", "scheme": "bearer", "description": "a device token (`greenhouse devices add`)"},
    "deviceCertificate": {"type": "mutualTLS", "description": "a client certificate whose subject names the device, verified by the TLS edge"},
}
_SCHEMA_MODELS = (ProduceRequest, BinaryProduceRequest)


def _error(status: int, description: str, model: type[BaseModel] = ErrorResponse) -> tuple[int, dict[str, Any]]:
    response: dict[str, Any] = {"model": model, "description": description}
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"description": WWW_AUTHENTICATE, "schema": {"type": "string"}}}
    return status, response


_UNAUTHORIZED = _error(401, errors.DESCRIPTIONS[errors.UNAUTHORIZED])
_TOPIC_NOT_FOUND = _error(404, errors.DESCRIPTIONS[errors.TOPIC_NOT_FOUND])
_PRODUCE_RESPONSES: dict[int | str, dict[str, Any]] = dict(
    [
        _error(400, errors.DESCRIPTIONS[errors.MALFORMED_JSON]),
        _UNAUTHORIZED,
        _error(403, "no record accepted and at least one not authorized for the credential (40302 greenhouse, 40303 device, 40304 partition); per-record results in offsets", RejectedResponse),
        _TOPIC_NOT_FOUND,
        _error(406, errors.DESCRIPTIONS[errors.NOT_ACCEPTABLE]),
        _error(413, "body or record count over the limit (41301, 41302)"),
        _error(415, errors.DESCRIPTIONS[errors.UNSUPPORTED_MEDIA_TYPE]),
        _error(422, "payload invalid or no record accepted (42206); per-record results in offsets when present", RejectedResponse),
        _error(503, errors.DESCRIPTIONS[errors.BUS_UNAVAILABLE]),
    ]
)


def _respond(result: IngestResponse) -> Response:
    return KafkaResponse(content=result.body, status_code=result.status, headers=result.headers or None)


def create_api(service: IngestService, *, edge_secret: bytes | Callable[[], bytes | None] | None = None) -> FastAPI:
    """The FastAPI app serving ``service`` (used by Ray Serve and by plain uvicorn alike).

    ``edge_secret``: the TLS edge's secret (:func:`app.security.edge.read_edge_secret`), or a
    function returning it (the edge may make it after the gateway starts); without it,
    client-certificate identities from the edge are not trusted."""
    secret_of = edge_secret if callable(edge_secret) else lambda: edge_secret
    offload = Offload()
    api = FastAPI(title="Greenhouse ingest gateway", version="1", description="Kafka REST Proxy v2 compatible produce API for greenhouse sensor readings.", default_response_class=KafkaResponse)

    def identify(request: Request) -> DeviceIdentity | None:
        headers = request.headers
        return service.authenticate(headers.get("authorization"), client_device(headers, secret_of()))

    @api.post(
        "/topics/{topic}",
        response_model=ProduceResponse,
        responses=_PRODUCE_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {JSON_V2: {"schema": _ref(ProduceRequest)}, BINARY_V2: {"schema": _ref(BinaryProduceRequest)}}}, "security": _SECURITY},
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

    @api.get("/topics", summary="Topics devices may produce to", response_model=list[str], responses=dict([_UNAUTHORIZED]), openapi_extra={"security": _SECURITY})
    async def list_topics(request: Request) -> Response:
        if identify(request) is None:
            return _respond(unauthorized())
        return _respond(IngestResponse(200, service.settings.ingest.topics))

    @api.get("/topics/{topic}", summary="Topic metadata", response_model=TopicInfo, responses=dict([_UNAUTHORIZED, _TOPIC_NOT_FOUND]), openapi_extra={"security": _SECURITY})
    async def topic_info(topic: str, request: Request) -> Response:
        if identify(request) is None:
            return _respond(unauthorized())
        return _respond(await offload(service.topic_info, topic))

    add_v3_routes(api, service, identify, offload)

    @api.get("/healthz", summary="Liveness", response_model=Health)
    async def healthz() -> Response:
        return _respond(IngestResponse(200, {"status": "ok"}))

    @api.get("/stats", summary="Counters since this replica started", response_model=Stats)
    async def stats() -> Response:
        s = service.stats
        return _respond(IngestResponse(200, {"requests": s.requests, "accepted": s.accepted, "rejected": s.rejected, "rejected_by_reason": dict(s.rejected_by_reason)}))

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """Routing errors in the REST Proxy envelope; a 405 names every method the path allows."""
        headers = dict(exc.headers or {})
        code = exc.status_code * 100  # e.g. 40400: no such route (40401 means no such topic)
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(api, request))
            code = errors.METHOD_NOT_ALLOWED
        return _respond(IngestResponse(exc.status_code, {"error_code": code, "message": str(exc.detail)}, headers))

    _install_openapi(api, service)
    return api


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


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


def _install_openapi(api: FastAPI, service: IngestService) -> None:
    """Complete FastAPI's document with what this gateway's settings say: the request schemas the
    produce route names (it reads its body itself, so FastAPI does not know them) with the record
    limit, the topics a ``{topic}`` may name, and the security schemes; drop the 422 FastAPI adds
    to routes with path parameters (a ``str`` path parameter never fails its validation)."""
    default = api.openapi
    limits = service.settings.ingest

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            doc = default()
            for path in doc["paths"].values():
                for operation in path.values():
                    if "HTTPValidationError" in orjson.dumps(operation["responses"].get("422", {})).decode():
                        del operation["responses"]["422"]
                    for parameter in operation.get("parameters", []):
                        if parameter["name"] == "topic" and parameter["in"] == "path":
                            parameter["schema"] = {"type": "string", "enum": list(limits.topics), "title": "Topic", "description": "an ingest topic (any other: 404/40401)"}
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            for model in _SCHEMA_MODELS:
                schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(schema.pop("$defs", {}))
                schema["properties"]["records"]["maxItems"] = limits.max_records_per_request
                schemas[model.__name__] = schema
            doc["components"]["securitySchemes"] = _SECURITY_SCHEMES
            api.openapi_schema = doc
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
