"""The ingest gateway's logic: Kafka REST Proxy v2 produce requests -> validated readings on the bus.

:class:`IngestService` is plain Python (no web framework, no Ray): it takes the request's topic,
headers and body bytes and answers a status and a JSON-able payload. The FastAPI layer
(:mod:`app.ingest.api`) and the Ray Serve deployment (:mod:`app.serve.ingest`) are thin shells
around it, which is also what lets the benchmark run the same code behind plain uvicorn.

Per request: the device's credential is checked first (a bearer token, or a client certificate the
TLS edge verified), then content type and size (cheap); the body is parsed once with orjson, each
record is validated against the reading contract and against the credential (its greenhouse, its
device, its greenhouse's partition). Rejected records are turned into
:class:`~app.contracts.deadletter.DeadLetter` bytes *before* anything is written, so that nothing
after the bus write can fail the request (a retry would duplicate what was accepted); then valid
ones go to the bus in one write (key = greenhouse id, so a greenhouse stays ordered; requests served
at the same time share it, :mod:`app.ingest.write_batcher`) and the dead letters to the dead-letter
topic. Nothing is answered 200 before the bus has it durably.

REST Proxy v3 (:mod:`app.ingest.v3`) takes its records out of their own envelope and goes through
:meth:`IngestService.produce_decoded`, the same path from validation to the dead letters.
"""

from __future__ import annotations

import base64
import binascii
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import orjson

from app.bus import Bus, BusError, OutgoingRecord, UnknownTopicError, partition_for_key
from app.config import Settings
from app.contracts.deadletter import DeadLetter
from app.contracts.reading import Reading, ReadingError, reading_json, reason_code, validate_reading
from app.contracts.reading_plain import PlainReading, plain_reading
from app.ingest import errors
from app.ingest.write_batcher import WriteBatcher
from app.security.credentials import DeviceIdentity, bearer_token

log = logging.getLogger(__name__)

JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY_V2 = "application/vnd.kafka.binary.v2+json"
RESPONSE_MEDIA_TYPE = "application/vnd.kafka.v2+json"
# Accept values v2 answers (in RESPONSE_MEDIA_TYPE, as Confluent's v2 does for all of them); the first is the one to suggest
ACCEPT_V2 = (RESPONSE_MEDIA_TYPE, "application/vnd.kafka+json", "application/json", "*/*", "application/*")
# One reason for every refused credential: which of missing/unknown/wrong/revoked it was is no
# business of whoever holds it.
UNAUTHORIZED_MESSAGE = "missing or invalid credentials"
WWW_AUTHENTICATE = 'Bearer realm="greenhouse-ingest"'
# Why a request had no valid credential, as /stats counts it (coarse on purpose: the answer is the
# same for all, and no part of a token is ever kept)
NO_CREDENTIAL = "missing_credential"  # neither a token nor a certificate the edge vouched for
MALFORMED_AUTHORIZATION = "malformed_authorization"  # an Authorization header that is not "Bearer <token>"
INVALID_TOKEN = "invalid_token"  # a bearer token that is unknown, wrong or revoked
INVALID_CERTIFICATE = "invalid_certificate"  # a verified certificate naming no active device


class DeviceAuthenticator(Protocol):
    """What the gateway needs of the device registry (:class:`app.security.credentials.DeviceRegistry`)."""

    def authenticate(self, token: str | None) -> DeviceIdentity | None: ...

    def by_certificate(self, device_id: str) -> DeviceIdentity | None: ...


@dataclass(frozen=True)
class IngestResponse:
    """What to answer: HTTP status, a JSON-able body and extra response headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


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
    unauthorized_by_reason: Counter = field(default_factory=Counter)  # 401 answers, by refusal reason

    def snapshot(self) -> dict[str, Any]:
        """The counters as ``GET /stats`` answers them (plain dicts, and the 401 total)."""
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "unauthorized": sum(self.unauthorized_by_reason.values()),
            "unauthorized_by_reason": dict(self.unauthorized_by_reason),
        }


def request_error(status: int, code: int, message: str) -> IngestResponse:
    """A request-level error in the REST Proxy envelope."""
    return IngestResponse(status, {"error_code": code, "message": message})


def unauthorized() -> IngestResponse:
    """The 401 answer to a request without a valid credential (the same for every cause)."""
    return IngestResponse(401, {"error_code": errors.UNAUTHORIZED, "message": UNAUTHORIZED_MESSAGE}, {"www-authenticate": WWW_AUTHENTICATE})


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


def authorize_reading(reading: Reading | PlainReading, partition: int | None, identity: DeviceIdentity, partitions: int) -> Rejection | None:
    """``None`` when ``identity`` may write ``reading`` (to ``partition``, when the record names
    one), else why not: another greenhouse (40302), another device (40303), or a partition that is
    not the greenhouse's own (40304; the key is always the greenhouse id)."""
    if reading.greenhouse_id != identity.greenhouse_id:
        return Rejection(errors.GREENHOUSE_FORBIDDEN, f"greenhouse_id: not authorized for greenhouse {reading.greenhouse_id!r}")
    if reading.device_id != identity.device_id:
        return Rejection(errors.DEVICE_FORBIDDEN, f"device_id: not authorized for device {reading.device_id!r}")
    if partition is not None:
        own = partition_for_key(reading.greenhouse_id.encode(), partitions)
        if partition != own:
            return Rejection(errors.PARTITION_FORBIDDEN, f"partition: greenhouse {reading.greenhouse_id!r} writes to partition {own} only (got {partition})")
    return None


@dataclass(frozen=True, slots=True)
class RecordValue:
    """A record's reading as decoded from its envelope (REST Proxy v2 or v3), and the partition the
    record names (``None``: the key chooses)."""

    value: Any
    partition: int | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """Where the bus put one accepted record, and the size of the value written."""

    partition: int
    offset: int
    value_bytes: int


RecordOutcome = Written | Rejection
"""What became of one record of a produce request."""
_NOT_WRITTEN = Rejection(errors.BROKER_ERROR, "not written")


def checked_partition(partition: Any) -> Rejection | None:
    """``None`` when ``partition`` is absent or a non-negative integer, else the 42206 rejection."""
    if partition is not None and (not isinstance(partition, int) or isinstance(partition, bool) or partition < 0):
        return Rejection(errors.INVALID_RECORD, "partition: must be a non-negative integer")
    return None


def decode_base64_json(text: Any) -> Any | Rejection:
    """The JSON value ``text`` holds as base64 (the binary embedded format), or the 42203 rejection."""
    if not isinstance(text, str):
        return Rejection(errors.VALUE_CONVERSION_FAILED, "value: binary records need a base64 string")
    try:
        return orjson.loads(base64.b64decode(text, validate=True))
    except (binascii.Error, ValueError):
        return Rejection(errors.VALUE_CONVERSION_FAILED, "value: not base64-encoded JSON")


def v2_record_value(record: Any, *, binary: bool) -> RecordValue | Rejection:
    """The reading and partition of one REST Proxy v2 record (``binary``: its value is base64 of
    the reading's JSON), or why the record is not one."""
    if not isinstance(record, dict):
        return Rejection(errors.INVALID_RECORD, "record: must be an object with a 'value'")
    if "value" not in record or record["value"] is None:
        return Rejection(errors.INVALID_RECORD, "value: a record needs a non-null 'value'")
    value = decode_base64_json(record["value"]) if binary else record["value"]
    if isinstance(value, Rejection):
        return value
    partition = record.get("partition")
    return checked_partition(partition) or RecordValue(value, partition)


def convert_value(decoded: RecordValue, *, now: datetime, max_future_skew_s: float, identity: DeviceIdentity, partitions: int) -> OutgoingRecord | Rejection:
    """A decoded record -> the bus record to write (key = greenhouse id), or why not: the reading
    is checked (:func:`~app.contracts.reading_plain.plain_reading` for a plain one, else
    :func:`~app.contracts.reading.validate_reading`) against ``now``, then by
    :func:`authorize_reading` against the sender's ``identity`` (``partitions``: the topic's count)."""
    reading: Reading | PlainReading | None = plain_reading(decoded.value, now=now, max_future_skew_s=max_future_skew_s)
    if reading is None:  # not certainly plain and valid: the model decides, with its reason
        try:
            reading = validate_reading(decoded.value, now=now, max_future_skew_s=max_future_skew_s)
        except ReadingError as exc:
            return Rejection(errors.INVALID_RECORD, exc.reason)
    denied = authorize_reading(reading, decoded.partition, identity, partitions)
    if denied:
        return denied
    data = reading.json if isinstance(reading, PlainReading) else reading_json(reading)
    return OutgoingRecord(value=data, key=reading.greenhouse_id.encode(), partition=decoded.partition)


def convert_record(record: Any, *, binary: bool, now: datetime, max_future_skew_s: float, identity: DeviceIdentity, partitions: int) -> OutgoingRecord | Rejection:
    """One REST Proxy v2 record -> the bus record to write, or why not
    (:func:`v2_record_value`, then :func:`convert_value`)."""
    decoded = v2_record_value(record, binary=binary)
    if isinstance(decoded, Rejection):
        return decoded
    return convert_value(decoded, now=now, max_future_skew_s=max_future_skew_s, identity=identity, partitions=partitions)


def dead_letter_bytes(topic: str, raw: Any, rejection: Rejection, now: datetime) -> bytes:
    """The dead-letter message of one rejected gateway record; never raises (a payload that cannot
    be encoded is replaced by a note, so the reason is kept)."""
    try:
        return DeadLetter(source="gateway", source_topic=topic, error_code=rejection.code, reason=rejection.reason, received_at=now, payload=raw).to_json()
    except Exception:  # json_safe makes this unreachable in practice; the request must not fail here
        log.exception("dead letter of a %d rejection could not be encoded; keeping its reason only", rejection.code)
        note = f"<payload of type {type(raw).__name__} could not be encoded>"
        return DeadLetter(source="gateway", source_topic=topic, error_code=rejection.code, reason=rejection.reason, received_at=now, payload=note).to_json()


class IngestService:
    """Validate and produce REST-Proxy-v2 requests to the bus, for authenticated devices only.

    Args:
        settings: product settings (topics, ingest limits).
        bus: where accepted records go.
        devices: who may post (the device registry; tests inject it on an embedded store).
        clock: returns "now" in UTC (injected for tests).
        on_result: optional hook called with ``(accepted, rejected_reasons)`` per request, used
            for metrics.
        on_refused: optional hook called with the reason of each refused credential (the
            reasons ``stats.unauthorized_by_reason`` counts), used for metrics.
        on_reading: optional hook called per request with ``(greenhouse_id, ts_s)``: the
            measurement time (Unix seconds) of the newest reading it accepted, used for metrics.
    """

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        devices: DeviceAuthenticator,
        *,
        clock: Callable[[], datetime] | None = None,
        on_result: Callable[[int, list[str]], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
        on_reading: Callable[[str, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.devices = devices
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._on_result = on_result
        self._on_refused = on_refused
        self._on_reading = on_reading
        self._partitions: dict[str, int] = {}
        self._writer = WriteBatcher(bus)  # concurrent requests share bus writes
        self.stats = IngestStats()
        topics = settings.topics
        for topic in {topics.sensors, topics.control, topics.deadletter, *settings.ingest.topics}:
            bus.create_topic(topic, topics.partitions)

    # -- request level ----------------------------------------------------------------------
    def authenticate(self, authorization: str | None, client_device: str | None = None) -> DeviceIdentity | None:
        """The device a request speaks for, or ``None``. A bearer token, when sent, decides (a
        wrong one is refused even with a certificate); else ``client_device``, the device id of a
        client certificate the TLS edge verified (:func:`app.security.edge.client_device`). Every
        refusal is counted in ``stats.unauthorized_by_reason`` (v2 and v3 routes all come here)."""
        identity, refusal = self._identify(authorization, client_device)
        if identity is None:
            self.stats.unauthorized_by_reason[refusal] += 1
            _call_hook(self._on_refused, refusal)
        return identity

    def _identify(self, authorization: str | None, client_device: str | None) -> tuple[DeviceIdentity | None, str]:
        """The device, and the reason to count should it be ``None``."""
        token = bearer_token(authorization)
        if token is not None or authorization:
            return self.devices.authenticate(token), INVALID_TOKEN if token is not None else MALFORMED_AUTHORIZATION
        if client_device:
            return self.devices.by_certificate(client_device), INVALID_CERTIFICATE
        return None, NO_CREDENTIAL

    def now(self) -> datetime:
        """The service's clock (UTC)."""
        return self._clock()

    def note_request(self) -> None:
        """Count a produce request (the v3 path counts its own)."""
        self.stats.requests += 1

    def check_request(
        self, topic: str, content_type: str | None, content_length: int | None, accept: str | None, *, media_types: tuple[str, ...] = (JSON_V2, BINARY_V2), acceptable: tuple[str, ...] = ACCEPT_V2
    ) -> IngestResponse | None:
        """Checks that need neither credential nor body (406 unless ``accept`` names one of
        ``acceptable``, 404, 415 unless ``content_type`` is one of ``media_types``, 413, in this
        order); ``None`` when the request may proceed."""
        if accept and not any(a.split(";", 1)[0].strip().lower() in acceptable for a in accept.split(",")):
            return request_error(406, errors.NOT_ACCEPTABLE, f"cannot produce any of Accept: {accept}; use {acceptable[0]}")
        if topic not in self.settings.ingest.topics:
            return request_error(404, errors.TOPIC_NOT_FOUND, f"Topic {topic} not found.")
        media = _media_type(content_type)
        if media not in media_types:
            return request_error(415, errors.UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Type {content_type or '(none)'!r}; use {' or '.join(media_types)}")
        limit = self.settings.ingest.max_body_bytes
        if content_length is not None and content_length > limit:
            return request_error(413, errors.BODY_TOO_LARGE, f"request body of {content_length} bytes exceeds {limit} bytes")
        return None

    # -- the produce call -------------------------------------------------------------------
    def produce(self, topic: str, body: bytes, *, content_type: str | None, accept: str | None = None, authorization: str | None = None, client_device: str | None = None) -> IngestResponse:
        """Handle ``POST /topics/{topic}`` with ``body``: 401 without a valid credential (checked
        first), else :meth:`produce_as`. Never raises for bad input."""
        identity = self.authenticate(authorization, client_device)
        if identity is None:
            self.stats.requests += 1
            return unauthorized()
        return self.produce_as(identity, topic, body, content_type=content_type, accept=accept)

    def produce_as(self, identity: DeviceIdentity, topic: str, body: bytes, *, content_type: str | None, accept: str | None = None) -> IngestResponse:
        """Produce for a device already authenticated by :meth:`authenticate` (the HTTP layer
        does that before it reads the body)."""
        self.note_request()
        early = self.check_request(topic, content_type, len(body), accept)
        if early:
            return early
        records = parse_produce_body(body, self.settings.ingest.max_records_per_request)
        if isinstance(records, IngestResponse):
            return records
        binary = _media_type(content_type) == BINARY_V2
        outcomes = self.produce_decoded(identity, topic, records, [v2_record_value(r, binary=binary) for r in records])
        if isinstance(outcomes, IngestResponse):
            return outcomes
        return _produce_answer(outcomes)

    def produce_decoded(self, identity: DeviceIdentity, topic: str, raws: list[Any], decoded: list[RecordValue | Rejection]) -> list[RecordOutcome] | IngestResponse:
        """Validate, authorize and write records already taken out of their envelopes (v2 or v3):
        ``raws`` as sent (kept in dead letters), ``decoded`` their readings. One outcome per
        record, or the request-level answer when nothing could be written (404 topic, 503 bus).
        Rejected records go to the dead-letter topic; nothing here raises for bad input."""
        now = self._clock()
        try:
            partitions = self._partition_count(topic)
        except UnknownTopicError:
            return request_error(404, errors.TOPIC_NOT_FOUND, f"Topic {topic} not found.")
        skew_s = self.settings.ingest.max_future_skew_s
        converted = [d if isinstance(d, Rejection) else convert_value(d, now=now, max_future_skew_s=skew_s, identity=identity, partitions=partitions) for d in decoded]
        rejected = [(raw, c) for raw, c in zip(raws, converted, strict=True) if isinstance(c, Rejection)]
        letters = [OutgoingRecord(value=dead_letter_bytes(topic, raw, r, now)) for raw, r in rejected]  # before any write: see the module docstring
        try:
            outcomes = self._write(topic, converted)
        except UnknownTopicError:
            return request_error(404, errors.TOPIC_NOT_FOUND, f"Topic {topic} not found.")
        except BusError as exc:
            log.warning("bus write failed for %d records: %s", len(raws) - len(rejected), exc)
            self._dead_letter(letters)
            return request_error(503, errors.BUS_UNAVAILABLE, "the bus is unavailable, nothing was written; retry")
        # from here on nothing may fail the request: the bus has the accepted records
        self._dead_letter(letters)
        accepted = sum(isinstance(o, Written) for o in outcomes)
        self._count(len(raws), accepted, [reason_code(r.reason) for _, r in rejected])
        if accepted:
            self._note_accepted(identity, topic, decoded, outcomes)
        return outcomes

    def _note_accepted(self, identity: DeviceIdentity, topic: str, decoded: list[RecordValue | Rejection], outcomes: list[RecordOutcome]) -> None:
        """Log where the accepted records went (one line a request, with a batch id to search
        for) and tell ``on_reading`` the newest reading's time."""
        written = [(d, o) for d, o in zip(decoded, outcomes, strict=True) if isinstance(o, Written)]
        if log.isEnabledFor(logging.INFO):
            self._log_batch(identity, topic, [o for _, o in written])
        if self._on_reading is not None:
            times = [t for d, _ in written if isinstance(d, RecordValue) and (t := reading_time_s(d.value)) is not None]
            if times:
                _call_hook(self._on_reading, identity.greenhouse_id, max(times))

    @staticmethod
    def _log_batch(identity: DeviceIdentity, topic: str, written: list[Written]) -> None:
        log.info(
            "ingest batch accepted",
            extra={
                "event": "ingest_batch",
                "batch_id": uuid.uuid4().hex,
                "greenhouse_id": identity.greenhouse_id,
                "device_id": identity.device_id,
                "records": len(written),
                "topic": topic,
                "partition_offsets": partition_offsets(written),
            },
        )

    def _partition_count(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            count = self._partitions[topic] = self.bus.partitions_for(topic)
        return count

    def _write(self, topic: str, converted: list[OutgoingRecord | Rejection]) -> list[RecordOutcome]:
        """Write the accepted records in one bus call; each record's outcome. Raises
        :class:`~app.bus.BusError` when the bus refused the whole write."""
        outcomes: list[RecordOutcome] = [c if isinstance(c, Rejection) else _NOT_WRITTEN for c in converted]  # set below
        outgoing = [(i, c) for i, c in enumerate(converted) if not isinstance(c, Rejection)]
        if not outgoing:
            return outcomes
        results = self._writer.produce(topic, [record for _, record in outgoing])
        for (i, record), res in zip(outgoing, results, strict=True):
            if res.ok and res.partition is not None and res.offset is not None:
                outcomes[i] = Written(res.partition, res.offset, len(record.value))
            else:
                code = errors.BROKER_RETRIABLE if res.retriable else errors.PARTITION_NOT_FOUND if "partition" in (res.error or "") else errors.BROKER_ERROR
                outcomes[i] = Rejection(code, res.error or "not written")
        return outcomes

    def _count(self, records: int, accepted: int, rejected_reasons: list[str]) -> None:
        self.stats.accepted += accepted
        self.stats.rejected += records - accepted
        self.stats.rejected_by_reason.update(rejected_reasons)
        if self._on_result:
            try:
                self._on_result(accepted, rejected_reasons)
            except Exception:  # metrics must not fail a request whose records are already written
                log.exception("ingest on_result hook failed")

    def _dead_letter(self, letters: list[OutgoingRecord]) -> None:
        """Keep rejected records, with their reason, on the dead-letter topic (best effort: the
        sender already has each record's reason)."""
        if not letters:
            return
        try:
            results = self.bus.produce(self.settings.topics.deadletter, letters)
        except BusError as exc:
            log.error("dead-letter write failed for %d records: %s", len(letters), exc)
            return
        failed = [r.error for r in results if not r.ok]
        if failed:
            log.error("dead-letter write refused %d of %d records: %s", len(failed), len(letters), failed[0])

    def topic_info(self, topic: str) -> IngestResponse:
        """``GET /topics/{topic}``: name and partitions, as REST Proxy v2 shapes it."""
        if topic not in self.settings.ingest.topics:
            return request_error(404, errors.TOPIC_NOT_FOUND, f"Topic {topic} not found.")
        count = self._partition_count(topic)
        return IngestResponse(200, {"name": topic, "configs": {}, "partitions": [{"partition": p, "leader": 0, "replicas": []} for p in range(count)]})


def partition_offsets(written: list[Written]) -> dict[int, list[int]]:
    """Partition -> ``[first, last]`` offset of the records written there."""
    spans: dict[int, list[int]] = {}
    for w in written:
        span = spans.setdefault(w.partition, [w.offset, w.offset])
        span[0], span[1] = min(span[0], w.offset), max(span[1], w.offset)
    return spans


def reading_time_s(value: Any) -> float | None:
    """The measurement time (Unix seconds) of an accepted reading's ``ts`` (RFC 3339 text or
    epoch milliseconds), or ``None`` when it cannot be read as either."""
    ts = value.get("ts") if isinstance(value, dict) else None
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return ts / 1000.0
    if isinstance(ts, str):
        try:
            stamp = datetime.fromisoformat(ts)
        except ValueError:
            return None
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
    return None


def _call_hook(hook: Callable[..., None] | None, *args: Any) -> None:
    """Call a metrics hook; never let it fail a request."""
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("ingest metrics hook failed")


def _produce_answer(outcomes: list[RecordOutcome]) -> IngestResponse:
    """The v2 answer: 200 when a record was accepted; else 403 when a record was refused for the
    credential (the first such code), else 422. Per-record results are in ``offsets`` either way."""
    offsets = [_offset(o.partition, o.offset, None, None) if isinstance(o, Written) else _offset(None, None, o.code, o.reason) for o in outcomes]
    body: dict[str, Any] = {"key_schema_id": None, "value_schema_id": None, "offsets": offsets}
    if any(isinstance(o, Written) for o in outcomes):
        return IngestResponse(200, body)
    forbidden = [o for o in outcomes if isinstance(o, Rejection) and o.code in errors.FORBIDDEN_RECORD_CODES]
    if forbidden:
        body["error_code"] = forbidden[0].code
        body["message"] = f"no record was accepted: {len(forbidden)} not authorized for this credential (see offsets[].error)"
        return IngestResponse(403, body)
    body["error_code"] = errors.NO_RECORD_ACCEPTED
    body["message"] = f"no record was accepted: {len(offsets)} rejected (see offsets[].error)"
    return IngestResponse(422, body)
