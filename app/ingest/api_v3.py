"""HTTP layer of REST Proxy v3 produce (:mod:`app.ingest.v3`), added to the gateway's FastAPI app.

Routes:

- ``POST /v3/clusters/{cluster_id}/topics/{topic}/records``: one record, or several concatenated.
  A body with a ``Content-Length`` is read whole (at most ``ingest.max_body_bytes``): one record
  is answered with its result and its status (200, or the record's 4xx); several get HTTP 200 and
  one result line each. A chunked body (streaming mode) gets HTTP 200 at once, then the results
  of the records as they complete, in order, one line each, written to the bus in batches of
  what has arrived while the last batch was written (at most ``ingest.max_records_per_request``
  records a write). A record larger than
  ``ingest.max_body_bytes`` gets a 413 line and ends the stream.
- ``GET /v3/clusters``, ``GET /v3/clusters/{cluster_id}``: the one cluster (``ingest.cluster_id``).

Request-level errors (before any record is read) answer ``{"error_code": <status>, "message"}``
in ``application/json``: 401 without a credential, 404 for another cluster id or a topic that is
not an ingest topic, 406 when ``Accept`` names nothing but other media types, 415 unless
``Content-Type: application/json``, 413 for a ``Content-Length`` over the limit; so do a 404 for a
path under ``/v3/`` with no route and a 405 (with ``Allow``): :func:`v3_error_answer` serves the
gateway's routing-error handler. The OpenAPI document describes these routes (:data:`V3_REQUEST_MODELS`
is the request body the produce route names).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from app.contracts.reading import Reading
from app.ingest import errors
from app.ingest.gateway import IngestResponse, IngestService, request_error, unauthorized
from app.ingest.json_stream import JsonStream, JsonValue
from app.ingest.offload import Offload
from app.ingest.openapi import SECURITY, ErrorResponse, error_response, ref
from app.ingest.v3 import ACCEPT, MEDIA_TYPE, produce_v3, result_lines, v3_error, v3_error_response
from app.security.credentials import DeviceIdentity

V3_PREFIX = "/v3"
PRODUCE_PATH = "/v3/clusters/{cluster_id}/topics/{topic}/records"
# A streamed body is read at most this many ingest.max_body_bytes ahead of the results sent
READ_AHEAD_BODIES = 8


class V3Response(JSONResponse):
    """A JSON body (orjson) in v3's media type."""

    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ResultStream(StreamingResponse):
    """Result lines as they are made, while the request body is still being read: sent here
    without Starlette's disconnect listener, which would read (and lose) the body's messages."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


# -- the OpenAPI document's models (the routes read and write JSON themselves) -----------------


class V3Header(BaseModel):
    """A record header: checked for shape only, not kept."""

    name: str
    value: str | None = Field(default=None, description="base64")


class V3JsonValue(BaseModel):
    """A record's value as JSON (the default type)."""

    type: Literal["JSON"] = "JSON"
    data: Reading


class V3BinaryValue(BaseModel):
    """A record's value as base64 of a reading's JSON (422 when it does not decode)."""

    type: Literal["BINARY"]
    data: str = Field(json_schema_extra={"contentEncoding": "base64"})


class V3StringValue(BaseModel):
    """A record's value as a reading's JSON in a string (422 when it does not decode)."""

    type: Literal["STRING"]
    data: str


class V3ProduceRecord(BaseModel):
    """One record of a v3 produce request; a body may hold several, concatenated (one result each)."""

    partition_id: Annotated[int, Field(ge=0)] | None = Field(default=None, description="optional; only the greenhouse's own partition is accepted (else 403)")
    headers: list[V3Header] | None = Field(default=None, description="checked for shape only, not kept")
    key: Any | None = Field(default=None, description="ignored: the key is always the reading's greenhouse_id")
    value: V3JsonValue | V3BinaryValue | V3StringValue = Field(description="a reading; other types (AVRO, ...) are not supported (422)")
    timestamp: datetime | None = Field(default=None, description="ignored: the bus stamps the record")


class V3Error(ErrorResponse):
    """A v3 error: a request's answer, or one record's result."""

    error_code: int = Field(description="the HTTP status (v3's convention)")


class V3ValueInfo(BaseModel):
    type: Literal["JSON", "BINARY", "STRING"]
    size: int = Field(description="bytes of the value written")


class V3ProduceResult(BaseModel):
    """Where one record went."""

    error_code: Literal[200]
    cluster_id: str
    topic_name: str
    partition_id: int
    offset: int
    timestamp: str = Field(description="when the gateway received the request (RFC 3339, UTC)")
    value: V3ValueInfo


class V3Cluster(BaseModel):
    kind: Literal["KafkaCluster"]
    cluster_id: str


class V3ClusterList(BaseModel):
    kind: Literal["KafkaClusterList"]
    metadata: dict[str, Any]
    data: list[V3Cluster]


V3_REQUEST_MODELS = (V3ProduceRecord,)
_error = partial(error_response, model=V3Error)
_UNAUTHORIZED = _error(401, errors.DESCRIPTIONS[errors.UNAUTHORIZED])
_STREAM_NOTE = "; several records in one body, or a chunked body (streaming mode), get HTTP 200 and one JSON object a line instead, in order: a V3ProduceResult or a V3Error per record"
_PRODUCE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": V3ProduceResult, "description": f"the record is on the bus{_STREAM_NOTE}"},
    **dict(
        [
            _error(400, "the record is not JSON, or the body holds no record"),
            _UNAUTHORIZED,
            _error(403, "the record is not authorized for the credential (its greenhouse, device or partition)"),
            _error(404, "no such cluster, or the topic is not an ingest topic"),
            _error(406, errors.DESCRIPTIONS[errors.NOT_ACCEPTABLE]),
            _error(413, "the body (by Content-Length) or the record is larger than ingest.max_body_bytes"),
            _error(415, "Content-Type is not application/json"),
            _error(422, "the record's value violates the reading contract, or does not decode"),
            _error(500, "the bus rejected the record"),
            _error(503, errors.DESCRIPTIONS[errors.BUS_UNAVAILABLE]),
        ]
    ),
}


def _answer(result: IngestResponse) -> Response:
    return V3Response(content=result.body, status_code=result.status, headers=result.headers or None)


def v3_error_answer(result: IngestResponse) -> Response:
    """A gateway request-level error (v2's envelope) answered in v3's shape and media type."""
    return _answer(v3_error_response(result))


def is_v3_path(scope: Scope) -> bool:
    """Whether a request's path is under ``/v3``, as routing sees it: after the ``root_path`` a
    mount or a Serve route prefix adds (the same rule as Starlette's routing)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    return path == V3_PREFIX or path.startswith(V3_PREFIX + "/")


def _cluster(cluster_id: str) -> dict[str, Any]:
    return {"kind": "KafkaCluster", "cluster_id": cluster_id}


def add_v3_routes(api: FastAPI, service: IngestService, identify: Callable[[Request], DeviceIdentity | None], offload: Offload) -> None:
    """Add the v3 routes to ``api``; ``identify`` tells the device a request speaks for, ``offload``
    runs the blocking part (validation and the bus write) off the event loop."""
    limits = service.settings.ingest

    def admitted(request: Request, cluster_id: str, topic: str | None) -> DeviceIdentity | Response:
        """The device ``request`` speaks for, or the answer that ends it before its body (401,
        404, and for ``topic`` 406, 404, 415, 413)."""
        identity = identify(request)
        if identity is None:
            return v3_error_answer(unauthorized())
        if cluster_id != limits.cluster_id:
            return _answer(IngestResponse(404, v3_error(404, f"Cluster {cluster_id} cannot be found.")))
        headers = request.headers
        early = topic and service.check_request(topic, headers.get("content-type"), _content_length(request), headers.get("accept"), media_types=(MEDIA_TYPE,), acceptable=ACCEPT)
        return v3_error_answer(early) if early else identity

    @api.post(
        PRODUCE_PATH,
        summary="Produce records (REST Proxy v3; streaming with a chunked body)",
        response_model=None,
        response_class=V3Response,
        responses=_PRODUCE_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": {MEDIA_TYPE: {"schema": ref(V3ProduceRecord)}}}, "security": SECURITY},
    )
    async def produce(cluster_id: str, topic: str, request: Request) -> Response:
        identity = admitted(request, cluster_id, topic)
        if isinstance(identity, Response):
            return identity
        service.note_request()
        if _content_length(request) is None:
            return ResultStream(_streamed_results(service, identity, topic, request, offload), media_type=MEDIA_TYPE)
        return await _whole_body_answer(service, identity, topic, request, offload)

    @api.get("/v3/clusters", summary="The cluster (REST Proxy v3)", response_model=V3ClusterList, response_class=V3Response, responses=dict([_UNAUTHORIZED]), openapi_extra={"security": SECURITY})
    async def clusters(request: Request) -> Response:
        refused = admitted(request, limits.cluster_id, None)
        if isinstance(refused, Response):
            return refused
        return _answer(IngestResponse(200, {"kind": "KafkaClusterList", "metadata": {}, "data": [_cluster(limits.cluster_id)]}))

    @api.get(
        "/v3/clusters/{cluster_id}",
        summary="One cluster (REST Proxy v3)",
        response_model=V3Cluster,
        response_class=V3Response,
        responses=dict([_UNAUTHORIZED, _error(404, "no such cluster")]),
        openapi_extra={"security": SECURITY},
    )
    async def cluster(cluster_id: str, request: Request) -> Response:
        refused = admitted(request, cluster_id, None)
        return refused if isinstance(refused, Response) else _answer(IngestResponse(200, _cluster(cluster_id)))


def _content_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


async def _whole_body_answer(service: IngestService, identity: DeviceIdentity, topic: str, request: Request, offload: Offload) -> Response:
    """A body read whole: one record's result with its status, or several records' lines."""
    limit = service.settings.ingest.max_body_bytes
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return _answer(v3_error_response(request_error(413, errors.BODY_TOO_LARGE, f"request body exceeds {limit} bytes")))
    values = JsonStream(limit).feed(bytes(body), final=True)
    if not values:
        return _answer(IngestResponse(400, v3_error(400, "the request body holds no record")))
    results = await _produced(service, identity, topic, values, offload)
    if len(results) == 1:
        return _answer(IngestResponse(results[0]["error_code"], results[0]))
    return Response(result_lines(results), media_type=MEDIA_TYPE)


class _ReadAhead:
    """Records of a streamed body read but not yet answered, bounded in body bytes: past the
    bound the body is read no further until results go out (TCP backpressure on the client), so
    a client that never reads its results holds a bounded share of the replica's memory. A
    client that sends everything before reading (many HTTP/1.1 clients) is fine up to the bound."""

    def __init__(self, limit_bytes: int) -> None:
        self._items: asyncio.Queue[tuple[list[JsonValue], int] | None] = asyncio.Queue()
        self._limit_bytes = limit_bytes
        self._pending_bytes = 0
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, values: list[JsonValue], size_bytes: int) -> None:
        await self._room.wait()
        self._pending_bytes += size_bytes
        if self._pending_bytes > self._limit_bytes:
            self._room.clear()
        self._items.put_nowait((values, size_bytes))

    def end(self) -> None:
        self._items.put_nowait(None)

    async def take_all(self) -> tuple[list[JsonValue], bool]:
        """Every record read so far (waiting for one chunk's at least), and whether the body ended."""
        first = await self._items.get()
        items = [first]
        while first is not None and not self._items.empty() and items[-1] is not None:
            items.append(self._items.get_nowait())
        ended = items[-1] is None
        taken = [item for item in items if item is not None]
        self._pending_bytes -= sum(size for _, size in taken)
        if self._pending_bytes <= self._limit_bytes:
            self._room.set()
        return [value for values, _ in taken for value in values], ended


async def _streamed_results(service: IngestService, identity: DeviceIdentity, topic: str, request: Request, offload: Offload) -> AsyncIterator[bytes]:
    """Result lines of a chunked body's records until the body ends. The body is read on while a
    batch is written, and the next batch is every record completed meanwhile (one write for many
    chunks under load, one per record when they trickle in). When the client leaves, what it sent
    is still written; its results have nobody to go to."""
    limit_bytes = service.settings.ingest.max_body_bytes
    arrived = _ReadAhead(READ_AHEAD_BODIES * limit_bytes)
    reader = asyncio.ensure_future(_read_records(request, JsonStream(limit_bytes), arrived))
    try:
        ended = False
        while not ended:
            batch, ended = await arrived.take_all()
            if batch:
                yield result_lines(await _produced(service, identity, topic, batch, offload))
    finally:
        reader.cancel()


async def _read_records(request: Request, stream: JsonStream, arrived: _ReadAhead) -> None:
    """Put the records of each chunk of ``request``'s body on ``arrived`` as they complete; the
    end when the body ends (or breaks, or the client leaves)."""
    try:
        async for chunk in request.stream():
            values = stream.feed(chunk, final=not chunk)
            if values:
                await arrived.put(values, len(chunk))
            if stream.broken:
                return
    except ClientDisconnect:
        return
    finally:
        arrived.end()


async def _produced(service: IngestService, identity: DeviceIdentity, topic: str, values: list[JsonValue], offload: Offload) -> list[dict[str, Any]]:
    """:func:`~app.ingest.v3.produce_v3` off the event loop, in batches of the request limit."""
    batch = service.settings.ingest.max_records_per_request
    results: list[dict[str, Any]] = []
    for start in range(0, len(values), batch):
        results += await offload(produce_v3, service, identity, topic, values[start : start + batch])
    return results
