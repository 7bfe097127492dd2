"""The ingest gateway's logic: Kafka REST Proxy v2 produce requests -> validated readings on the bus.

:class:`IngestService` is plain Python (no web framework, no Ray): it takes the request's topic,
headers and body bytes and answers a status and a JSON-able payload. The FastAPI layer
(:mod:`app.ingest.api`) and the Ray Serve deployment (:mod:`app.serve.ingest`) are thin shells
around it, which is also what lets the benchmark run the same code behind plain uvicorn.

Per request: content type, size and auth are checked first (cheap), the body is parsed once with
orjson, each record is validated against the reading contract, valid ones go to the bus in one
write (key = greenhouse id, so a greenhouse stays ordered) and invalid ones go to the dead-letter
topic with their reason. Nothing is answered 200 before the bus has it durably.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from app.bus import Bus, BusError, OutgoingRecord, UnknownTopicError
from app.config import Settings
from app.contracts.reading import ReadingError, validate_reading
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


class IngestService:
    """Validate and produce REST-Proxy-v2 requests to the bus.

    Args:
        settings: product settings (topics, ingest limits, tokens).
        bus: where accepted records go.
        clock: returns "now" in UTC (injected for tests).
        on_result: optional hook called with ``(accepted, rejected_reasons)`` per request, used
            for metrics.
    """

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        *,
        clock: Callable[[], datetime] | None = None,
        on_result: Callable[[int, list[str]], None] | None = None,
    ) -> None:
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

    def check_headers(
        self,
        topic: str,
        content_type: str | None,
        content_length: int | None,
        accept: str | None,
        authorization: str | None,
    ) -> IngestResponse | None:
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
            return request_error(
                415,
                errors.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported Content-Type {content_type or '(none)'!r}; use {JSON_V2} or {BINARY_V2}",
            )
        limit = self.settings.ingest.max_body_bytes
        if content_length is not None and content_length > limit:
            return request_error(413, errors.BODY_TOO_LARGE, f"request body of {content_length} bytes exceeds {limit} bytes")
        return None

    # -- the produce call -------------------------------------------------------------------
    def produce(
        self,
        topic: str,
        body: bytes,
        *,
        content_type: str | None,
        accept: str | None = None,
        authorization: str | None = None,
    ) -> IngestResponse:
        """Handle ``POST /topics/{topic}`` with ``body``; never raises for bad input."""
        self.stats.requests += 1
        early = self.check_headers(topic, content_type, len(body), accept, authorization)
        if early:
            return early
        binary = _media_type(content_type) == BINARY_V2
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return request_error(400, errors.MALFORMED_JSON, f"request body is not valid JSON: {exc}")
        records = payload.get("records") if isinstance(payload, dict) else None
        if not isinstance(records, list):
            return request_error(422, errors.NO_RECORD_ACCEPTED, "request body must be an object with a 'records' list")
        if not records:
            return request_error(422, errors.NO_RECORD_ACCEPTED, "records may not be empty")
        limit = self.settings.ingest.max_records_per_request
        if len(records) > limit:
            return request_error(413, errors.TOO_MANY_RECORDS, f"{len(records)} records exceed the limit of {limit} per request")

        now = self._clock()
        skew_s = self.settings.ingest.max_future_skew_s
        offsets: list[dict[str, Any] | None] = [None] * len(records)
        outgoing: list[OutgoingRecord] = []
        outgoing_index: list[int] = []
        dead: list[tuple[int, int, str, Any]] = []  # (index, code, reason, raw record)
        for i, record in enumerate(records):
            code, reason, out = self._convert(record, binary, now, skew_s)
            if out is None:
                offsets[i] = {"partition": None, "offset": None, "error_code": code, "error": reason}
                dead.append((i, code, reason, record))
            else:
                outgoing.append(out)
                outgoing_index.append(i)

        accepted = 0
        if outgoing:
            try:
                results = self.bus.produce(topic, outgoing)
            except UnknownTopicError:
                return request_error(404, errors.TOPIC_NOT_FOUND, f"Topic {topic} not found.")
            except BusError as exc:
                log.warning("bus write failed for %d records: %s", len(outgoing), exc)
                self._dead_letter(topic, dead, now)
                return request_error(503, errors.BUS_UNAVAILABLE, f"the bus is unavailable, nothing was written: {exc}")
            for i, res in zip(outgoing_index, results):
                if res.ok:
                    accepted += 1
                    offsets[i] = {"partition": res.partition, "offset": res.offset, "error_code": None, "error": None}
                else:
                    code = errors.BROKER_RETRIABLE if res.retriable else errors.PARTITION_NOT_FOUND if "partition" in (res.error or "") else errors.BROKER_ERROR
                    offsets[i] = {"partition": None, "offset": None, "error_code": code, "error": res.error}
        self._dead_letter(topic, dead, now)

        rejected_reasons = [reason.split(":", 1)[0] for _, _, reason, _ in dead]
        self.stats.accepted += accepted
        self.stats.rejected += len(records) - accepted
        self.stats.rejected_by_reason.update(rejected_reasons)
        if self._on_result:
            self._on_result(accepted, rejected_reasons)
        body_out: dict[str, Any] = {"key_schema_id": None, "value_schema_id": None, "offsets": offsets}
        if accepted == 0:
            body_out["error_code"] = errors.NO_RECORD_ACCEPTED
            body_out["message"] = f"no record was accepted: {len(records)} rejected (see offsets[].error)"
            return IngestResponse(422, body_out)
        return IngestResponse(200, body_out)

    def _convert(
        self, record: Any, binary: bool, now: datetime, skew_s: float
    ) -> tuple[int, str, OutgoingRecord | None]:
        """One REST Proxy record -> (error code, reason, outgoing record or None)."""
        if not isinstance(record, dict):
            return errors.INVALID_RECORD, "record: must be an object with a 'value'", None
        if "value" not in record or record["value"] is None:
            return errors.INVALID_RECORD, "value: a record needs a non-null 'value'", None
        value = record["value"]
        if binary:
            if not isinstance(value, str):
                return errors.VALUE_CONVERSION_FAILED, "value: binary records need a base64 string", None
            try:
                value = orjson.loads(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                return errors.VALUE_CONVERSION_FAILED, "value: not base64-encoded JSON", None
        partition = record.get("partition")
        if partition is not None and (not isinstance(partition, int) or isinstance(partition, bool) or partition < 0):
            return errors.INVALID_RECORD, "partition: must be a non-negative integer", None
        try:
            reading = validate_reading(value, now=now, max_future_skew_s=skew_s)
        except ReadingError as exc:
            return errors.INVALID_RECORD, exc.reason, None
        data = orjson.dumps(reading.model_dump(mode="json", exclude_none=True))
        return 0, "", OutgoingRecord(value=data, key=reading.greenhouse_id.encode(), partition=partition)

    def _dead_letter(self, topic: str, dead: list[tuple[int, int, str, Any]], now: datetime) -> None:
        """Keep rejected records, with their reason, on the dead-letter topic (best effort)."""
        if not dead:
            return
        received = now.isoformat()
        out = [
            OutgoingRecord(
                value=orjson.dumps(
                    {"source_topic": topic, "error_code": code, "reason": reason, "received_at": received, "record": raw},
                    default=str,
                )
            )
            for _, code, reason, raw in dead
        ]
        try:
            self.bus.produce(self.settings.topics.deadletter, out)
        except BusError as exc:  # the sender already has the per-record reason; do not fail the request
            log.error("dead-letter write failed for %d records: %s", len(out), exc)

    def topic_info(self, topic: str) -> IngestResponse:
        """``GET /topics/{topic}``: name and partitions, as REST Proxy v2 shapes it."""
        if topic not in self.settings.ingest.topics:
            return request_error(404, errors.TOPIC_NOT_FOUND, f"Topic {topic} not found.")
        count = self.bus.partitions_for(topic)
        return IngestResponse(200, {"name": topic, "configs": {}, "partitions": [{"partition": p, "leader": 0, "replicas": []} for p in range(count)]})
