"""Confluent REST Proxy v3 produce on the ingest gateway's own code path.

``POST /v3/clusters/{cluster_id}/topics/{topic}/records`` takes one JSON object per record::

    {"partition_id": 3, "headers": [{"name": "fw", "value": "MS4y"}], "key": {"type": "JSON", "data": "gh-01"},
     "value": {"type": "JSON", "data": {<a reading>}}, "timestamp": "2026-06-01T12:00:00Z"}

and several of them concatenated in one body (streaming mode: a chunked body that stays open) get
one result each, in order: ``{"error_code": 200, "cluster_id", "topic_name", "partition_id",
"offset", "timestamp", "value": {"type", "size"}}`` for a record on the bus, ``{"error_code": <HTTP
status>, "message": <reason>}`` for one that is not (v3 error codes are HTTP statuses; the reasons
are the v2 gateway's). ``value.type`` is ``JSON`` (``data`` is the reading; the default), ``BINARY``
(base64 of the reading's JSON) or ``STRING`` (the reading's JSON as a string). As in v2 the key is
always the reading's greenhouse id (a ``key`` sent is ignored), and so are ``headers`` (checked for
shape only) and ``timestamp``: the bus stamps the record when it takes it.

Records go through :meth:`~app.ingest.gateway.IngestService.produce_decoded`, the v2 path: the same
validation, credential rules, dead letters, metrics and durability (a 200 result only once the bus
holds the record).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from app.ingest import errors
from app.ingest.gateway import IngestResponse, IngestService, RecordOutcome, RecordValue, Rejection, checked_partition, decode_base64_json
from app.ingest.json_stream import JsonValue
from app.security.credentials import DeviceIdentity

MEDIA_TYPE = "application/json"
# Accept values v3 answers: only its own media type (v2's are not what a v3 answer is)
ACCEPT = (MEDIA_TYPE, "*/*", "application/*")
VALUE_TYPES = ("JSON", "BINARY", "STRING")


def v3_status(code: int) -> int:
    """The HTTP status a gateway error code stands for (42206 -> 422): the ``error_code`` of v3."""
    return code // 100 if code >= 10_000 else code


def v3_error(status: int, message: str) -> dict[str, Any]:
    """A v3 error object (a request's answer, or one record's result line)."""
    return {"error_code": status, "message": message}


def v3_error_response(response: IngestResponse) -> IngestResponse:
    """A gateway request-level error in the v3 shape: its HTTP status as ``error_code``."""
    return IngestResponse(response.status, v3_error(response.status, response.body["message"]), response.headers)


def _checked_headers(headers: Any) -> Rejection | None:
    """``None`` when ``headers`` is absent or a list of ``{"name": str, "value": base64 | null}``."""
    if headers is None:
        return None
    if not isinstance(headers, list) or not all(isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("value"), str | None) for h in headers):
        return Rejection(errors.INVALID_RECORD, "headers: must be a list of {name, value} with string names and base64 values")
    return None


def v3_record_value(record: Any) -> RecordValue | Rejection:
    """The reading and partition of one v3 produce request, or why it is not one (42206, or 42203
    for a value that does not decode)."""
    if not isinstance(record, dict):
        return Rejection(errors.INVALID_RECORD, "record: must be an object with a 'value'")
    value = record.get("value")
    if not isinstance(value, dict) or value.get("data") is None:
        return Rejection(errors.INVALID_RECORD, "value: a record needs a 'value' object with non-null 'data'")
    kind = value.get("type", "JSON")
    if kind not in VALUE_TYPES:
        return Rejection(errors.INVALID_RECORD, f"value.type: must be one of {', '.join(VALUE_TYPES)} (schemas are not supported)")
    data = value["data"]
    if kind == "BINARY":
        data = decode_base64_json(data)
    elif kind == "STRING":
        data = _json_of_string(data)
    if isinstance(data, Rejection):
        return data
    partition = record.get("partition_id")
    return checked_partition(partition) or _checked_headers(record.get("headers")) or RecordValue(data, partition)


def _json_of_string(text: Any) -> Any | Rejection:
    if not isinstance(text, str):
        return Rejection(errors.VALUE_CONVERSION_FAILED, "value.data: STRING records need a string")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return Rejection(errors.VALUE_CONVERSION_FAILED, "value.data: not a reading's JSON")


def _value_type(record: Any) -> str:
    value = record.get("value") if isinstance(record, dict) else None
    kind = value.get("type", "JSON") if isinstance(value, dict) else "JSON"
    return kind if kind in VALUE_TYPES else "JSON"


def result_line(outcome: RecordOutcome, record: Any, *, cluster_id: str, topic: str, received: datetime) -> dict[str, Any]:
    """One record's v3 result: where it went (``error_code`` 200), or its error."""
    if isinstance(outcome, Rejection):
        return v3_error(v3_status(outcome.code), outcome.reason)
    return {
        "error_code": 200,
        "cluster_id": cluster_id,
        "topic_name": topic,
        "partition_id": outcome.partition,
        "offset": outcome.offset,
        "timestamp": received.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "value": {"type": _value_type(record), "size": outcome.value_bytes},
    }


def _decoded(value: JsonValue) -> RecordValue | Rejection:
    if value.too_large:
        return Rejection(errors.BODY_TOO_LARGE, value.error or "record too large")
    if value.error is not None:
        return Rejection(errors.MALFORMED_JSON, f"record: {value.error}")
    return v3_record_value(value.value)


def produce_v3(service: IngestService, identity: DeviceIdentity, topic: str, values: list[JsonValue]) -> list[dict[str, Any]]:
    """Produce the records ``values`` (at most ``ingest.max_records_per_request``) for an
    authenticated device; one v3 result per record, in order. A request-level failure (the bus
    unavailable: nothing written) is every record's result."""
    received = service.now()
    decoded = [_decoded(v) for v in values]
    outcomes = service.produce_decoded(identity, topic, [v.value for v in values], decoded)
    if isinstance(outcomes, IngestResponse):
        failed = v3_error_response(outcomes).body
        return [failed for _ in values]
    cluster_id = service.settings.ingest.cluster_id
    return [result_line(o, v.value, cluster_id=cluster_id, topic=topic, received=received) for o, v in zip(outcomes, values, strict=True)]


def result_lines(results: list[dict[str, Any]]) -> bytes:
    """Results as the streamed answer carries them: one JSON object a line."""
    return b"".join(orjson.dumps(r) + b"\n" for r in results)
