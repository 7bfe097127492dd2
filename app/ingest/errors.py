"""REST-Proxy-style error codes used by the ingest gateway (HTTP status * 100 + n).

Request-level errors answer ``{"error_code": <code>, "message": <reason>}``; per-record errors
appear in the ``offsets`` list of a 200 (or of a 422/403 when no record was accepted).

Codes Confluent's REST Proxy defines keep its meaning (40101, 40401, 40402, 42203, 42206, 50002,
50003); the 403 codes are this gateway's own: Confluent's only 403 code, 40301, means "the Kafka
ACLs refuse this topic", while 40302-40304 say a device's credential does not cover one record.
"""

from __future__ import annotations

# request level
MALFORMED_JSON = 40001  # 400: body is not JSON
UNAUTHORIZED = 40101  # 401: no credential, or one that is unknown, wrong or revoked
TOPIC_NOT_FOUND = 40401  # 404 (a path the gateway has no route for: 40400)
METHOD_NOT_ALLOWED = 40501  # 405, with an Allow header
NOT_ACCEPTABLE = 40601  # 406: Accept header names no type we produce
BODY_TOO_LARGE = 41301  # 413: body larger than ingest.max_body_bytes
TOO_MANY_RECORDS = 41302  # 413: more records than ingest.max_records_per_request
UNSUPPORTED_MEDIA_TYPE = 41501  # 415
NO_RECORD_ACCEPTED = 42206  # 422: request shape wrong, or every record rejected
BUS_UNAVAILABLE = 50301  # 503: the bus refused the whole write; retry

# per record (a 403 request answer carries the first of these when no record was accepted)
GREENHOUSE_FORBIDDEN = 40302  # reading's greenhouse_id is not the credential's greenhouse
DEVICE_FORBIDDEN = 40303  # reading's device_id is not the credential's device
PARTITION_FORBIDDEN = 40304  # explicit partition other than the greenhouse's own
PARTITION_NOT_FOUND = 40402
VALUE_CONVERSION_FAILED = 42203  # value is not JSON / not base64
INVALID_RECORD = 42206  # value violates the reading contract
BROKER_ERROR = 50002
BROKER_RETRIABLE = 50003

FORBIDDEN_RECORD_CODES = frozenset({GREENHOUSE_FORBIDDEN, DEVICE_FORBIDDEN, PARTITION_FORBIDDEN})

DESCRIPTIONS: dict[int, str] = {
    MALFORMED_JSON: "request body is not valid JSON",
    UNAUTHORIZED: "missing or invalid credentials",
    TOPIC_NOT_FOUND: "topic not found (only ingest topics accept records)",
    METHOD_NOT_ALLOWED: "method not allowed on this path (see the Allow header)",
    NOT_ACCEPTABLE: "Accept header names no media type the gateway produces",
    BODY_TOO_LARGE: "request body larger than ingest.max_body_bytes",
    TOO_MANY_RECORDS: "more records than ingest.max_records_per_request",
    UNSUPPORTED_MEDIA_TYPE: "Content-Type is not a supported embedded format",
    NO_RECORD_ACCEPTED: "request payload invalid, or no record in it was accepted",
    BUS_UNAVAILABLE: "the bus is unavailable; nothing was written, retry",
    GREENHOUSE_FORBIDDEN: "the credential is not authorized for the record's greenhouse",
    DEVICE_FORBIDDEN: "the credential is not authorized for the record's device",
    PARTITION_FORBIDDEN: "a record may only go to its greenhouse's partition",
    PARTITION_NOT_FOUND: "record names a partition the topic does not have",
    VALUE_CONVERSION_FAILED: "record value could not be decoded (JSON or base64)",
    INVALID_RECORD: "record value violates the reading contract",
    BROKER_ERROR: "the bus rejected the record",
    BROKER_RETRIABLE: "the bus failed transiently; retry the record",
}
