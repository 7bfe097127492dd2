"""The ingest gateway's logic: Kafka REST Proxy v2 produce requests -> validated readings on the bus.

:class:`IngestService` is plain Python (no web framework, no Ray): it takes the request's topic,
headers and body bytes and answers a status and a JSON-able payload. The FastAPI layer
(:mod:`app.ingest.api`) and the Ray Serve deployment (:mod:`app.serve.ingest`) are thin shells
around it, which is also what lets the benchmark run the same code behind plain uvicorn.

Per request: content type, size and auth are checked first (cheap), the body is parsed once with
orjson, each record is validated against the reading contract, valid ones go to the bus in one
write (key = greenhouse id, so a greenhouse stays ordered) and invalid ones go to the dead-letter
topic as :class:`~app.contracts.deadletter.DeadLetter` records. Nothing is answered 200 before the bus has it durably.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from app.bus import Bus, BusError, OutgoingRecord, UnknownTopicError
from app.config import Settings
from app.contracts.deadletter import DeadLetter
from app.contracts.reading import ReadingError, reason_code, validate_reading
from app.ingest import errors

log = logging.getLogger(__name__)

JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
RESPONSE_MEDIA_TYPE = "application/vnd.kafka.v2+json"
_ACCEPTABLE = ("application/vnd.kafka.v2+json", "application/vnd.kafka+json", "application/json", "*/*", "application/*")


@dataclass(frozen=True)
class IngestResponse:
    """What to answer: HTTP status and a JSON-able body."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    """Why one record of a request was not accepted: its per-record error code and reason."""

    code: int
    reason: str


@dataclass
class IngestStats:
    """Counters since start (also exported as metrics by the Serve deployment)."""

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: Counter = field(default_factory=Counter)


def request_error(status: int, code: int, message: str) -> IngestResponse:
    """A request-level error in the REST Proxy envelope."""
    return IngestResponse(status, {"error_code": code, "message": message})


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _offset(partition: int | None, offset: int | None, code: int | None, error: str | None) -> dict[str, Any]:
    return {"partition": partition, "offset": offset, "error_code": code, "error": error}


def parse_produce_body(body: bytes, max_records: int) -> list[Any] | IngestResponse:
    """The ``records`` list of a REST Proxy v2 produce body, or the request-level error to answer
    (400/40001 not JSON, 422/42206 no or empty ``records`` list, 413/41302 too many records)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return request_error(400, errors.MALFORMED_JSON, f"request body is not valid JSON: {exc}")
    records = payload.get("records") if isinstance(payload, dict) else None
    if not isinstance(records, list):
        return request_error(422, errors.NO_RECORD_ACCEPTED, "request body must be an object with a 'records' list")
    if not records:
        return request_error(422, errors.NO_RECORD_ACCEPTED, "records may not be empty")
    if len(records) > max_records:
        return request_error(413, errors.TOO_MANY_RECORDS, f"{len(records)} records exceed the limit of {max_records} per request")
    return records


def convert_record(record: Any, *, binary: bool, now: datetime, max_future_skew_s: float) -> OutgoingRecord | Rejection:
    """One REST Proxy record -> the bus record to write (key = greenhouse id), or why not.

    ``binary`` records carry base64 of the reading's JSON (else the reading itself); the reading
    is checked by :func:`~app.contracts.reading.validate_reading` against ``now``.
    """
    if not isinstance(record, dict):
        return Rejection(errors.INVALID_RECORD, "record: must be an object with a 'value'")
    if "value" not in record or record["value"] is None:
        return Rejection(errors.INVALID_RECORD, "value: a record needs a non-null 'value'")
    value = record["value"]
    if binary:
        if not isinstance(value, str):
            return Rejection(errors.VALUE_CONVERSION_FAILED, "value: binary records need a base64 string")
        try:
            value = orjson.loads(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            return Rejection(errors.VALUE_CONVERSION_FAILED, "value: not base64-encoded JSON")
    partition = record.get("partition")
    if partition is not None and (not isinstance(partition, int) or isinstance(partition, bool) or partition < 0):
        return Rejection(errors.INVALID_RECORD, "partition: must be a non-negative integer")
    try:
        reading = validate_reading(value, now=now, max_future_skew_s=max_future_skew_s)
    except ReadingError as exc:
        return Rejection(errors.INVALID_RECORD, exc.reason)
    data = orjson.dumps(reading.model_dump(mode="json", exclude_none=True))
    return OutgoingRecord(value=data, key=reading.greenhouse_id.encode(), partition=partition)


class IngestService:
    """Validate and produce REST-Proxy-v2 requests to the bus.

    Args:
        settings: product settings (topics, ingest limits, tokens).
        bus: where accepted records go.
        clock: returns "now" in UTC (injected for tests).
        on_result: optional hook called with ``(accepted, rejected_reasons)`` per request, used
            for metrics.
    """

    def __init__(self, settings: Settings, bus: Bus, *, clock: Callable[[], datetime] | None = None, on_result: Callable[[int, list[str]], None] | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._on_result = on_result
        self.stats = IngestStats()
        topics = settings.topics
        for topic in {topics.sensors, topics.control, topics.deadletter, *settings.ingest.topics}:
            bus.create_topic(topic, topics.partitions)
        self._tokens = [t.encode() for t in settings.ingest.api_tokens]

    # -- request level ----------------------------------------------------------------------
    def check_auth(self, authorization: str | None) -> IngestResponse | None:
        """``None`` when allowed, else a 401 response."""
        if not self._tokens:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and any(hmac.compare_digest(token.encode(), t) for t in self._tokens):
            return None
        return request_error(401, errors.UNAUTHORIZED, "missing or invalid bearer token")

    def check_headers(self, topic: str, content_type: str | None, content_length: int | None, accept: str | None, authorization: str | None) -> IngestResponse | None:
        """Checks that need no body; ``None`` when the request may proceed."""
        denied = self.check_auth(authorization)
        if denied:
            return denied
        if accept and not any(a.split(";", 1)[0].strip().lower() in _ACCEPTABLE for a in accept.split(",")):
            return request_error(406, errors.NOT_ACCEPTABLE, f"cannot produce any of Accept: {accept}; use {RESPONSE_MEDIA_TYPE}")
        if topic not in self.settings.ingest.topics:
            return request_error(404, errors.TOPIC_NOT_FOUND, f"Topic {topic} not found.")
        media = _media_type(content_type)
        if media not in (JSON_V2, BINARY_V2):
            return request_error(415, errors.UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Type {content_type or '(none)'!r}; use {JSON_V2} or {BINARY_V2}")
        limit = self.settings.ingest.max_body_bytes
        if content_length is not None and content_length > limit:
            return request_error(413, errors.BODY_TOO_LARGE, f"request body of {content_length} bytes exceeds {limit} bytes")
        return None

    # -- the produce call -------------------------------------------------------------------
    def produce(self, topic: str, body: bytes, *, content_type: str | None, accept: str | None = None, authorization: str | None = None) -> IngestResponse:
        """Handle ``POST /topics/{topic}`` with ``body``; never raises for bad input."""
        self.stats.requests += 1
        early = self.check_headers(topic, content_type, len(body), accept, authorization)
        if early:
            return early
        records = parse_produce_body(body, self.settings.ingest.max_records_per_request)
        if isinstance(records, IngestResponse):
            return records
        now = self._clock()
        binary = _media_type(content_type) == BINARY_V2
        skew_s = self.settings.ingest.max_future_skew_s
        converted = [convert_record(r, binary=binary, now=now, max_future_skew_s=skew_s) for r in records]
        rejected = [(raw, c) for raw, c in zip(records, converted) if isinstance(c, Rejection)]
        try:
            offsets, accepted = self._write(topic, converted)
        except UnknownTopicError:
            return request_error(404, errors.TOPIC_NOT_FOUND, f"Topic {topic} not found.")
        except BusError as exc:
            log.warning("bus write failed for %d records: %s", len(records) - len(rejected), exc)
            self._dead_letter(topic, rejected, now)
            return request_error(503, errors.BUS_UNAVAILABLE, f"the bus is unavailable, nothing was written: {exc}")
        self._dead_letter(topic, rejected, now)
        self._count(len(records), accepted, [reason_code(r.reason) for _, r in rejected])
        body_out: dict[str, Any] = {"key_schema_id": None, "value_schema_id": None, "offsets": offsets}
        if accepted == 0:
            body_out["error_code"] = errors.NO_RECORD_ACCEPTED
            body_out["message"] = f"no record was accepted: {len(records)} rejected (see offsets[].error)"
            return IngestResponse(422, body_out)
        return IngestResponse(200, body_out)

    def _write(self, topic: str, converted: list[OutgoingRecord | Rejection]) -> tuple[list[dict[str, Any]], int]:
        """Write the accepted records in one bus call; the per-record offsets and how many the bus
        took. Raises :class:`~app.bus.BusError` when the bus refused the whole write."""
        offsets: list[dict[str, Any]] = []
        outgoing: list[tuple[int, OutgoingRecord]] = []
        for i, c in enumerate(converted):
            if isinstance(c, Rejection):
                offsets.append(_offset(None, None, c.code, c.reason))
            else:
                offsets.append(_offset(None, None, errors.BROKER_ERROR, "not written"))  # set below
                outgoing.append((i, c))
        if not outgoing:
            return offsets, 0
        results = self.bus.produce(topic, [record for _, record in outgoing])
        accepted = 0
        for (i, _), res in zip(outgoing, results):
            if res.ok:
                accepted += 1
                offsets[i] = _offset(res.partition, res.offset, None, None)
            else:
                code = errors.BROKER_RETRIABLE if res.retriable else errors.PARTITION_NOT_FOUND if "partition" in (res.error or "") else errors.BROKER_ERROR
                offsets[i] = _offset(None, None, code, res.error)
        return offsets, accepted

    def _count(self, records: int, accepted: int, rejected_reasons: list[str]) -> None:
        self.stats.accepted += accepted
        self.stats.rejected += records - accepted
        self.stats.rejected_by_reason.update(rejected_reasons)
        if self._on_result:
            self._on_result(accepted, rejected_reasons)

    def _dead_letter(self, topic: str, rejected: list[tuple[Any, Rejection]], now: datetime) -> None:
        """Keep rejected records, with their reason, on the dead-letter topic (best effort)."""
        if not rejected:
            return
        letters = [DeadLetter(source="gateway", source_topic=topic, error_code=r.code, reason=r.reason, received_at=now, payload=raw) for raw, r in rejected]
        try:
            self.bus.produce(self.settings.topics.deadletter, [OutgoingRecord(value=d.to_json()) for d in letters])
        except BusError as exc:  # the sender already has the per-record reason; do not fail the request
            log.error("dead-letter write failed for %d records: %s", len(letters), exc)

    def topic_info(self, topic: str) -> IngestResponse:
        """``GET /topics/{topic}``: name and partitions, as REST Proxy v2 shapes it."""
        if topic not in self.settings.ingest.topics:
            return request_error(404, errors.TOPIC_NOT_FOUND, f"Topic {topic} not found.")
        count = self.bus.partitions_for(topic)
        return IngestResponse(200, {"name": topic, "configs": {}, "partitions": [{"partition": p, "leader": 0, "replicas": []} for p in range(count)]})
