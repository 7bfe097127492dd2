"""REST-Proxy-style error codes used by the ingest gateway (HTTP status * 100 + n).

Request-level errors answer ``{"error_code": <code>, "message": <reason>}``; per-record errors
appear in the ``offsets`` list of a 200 (or 422 when no record was accepted).
"""

from __future__ import annotations

# request level
MALFORMED_JSON = 40001  # 400: body is not JSON
UNAUTHORIZED = 40101  # 401: missing or wrong bearer token
FORBIDDEN = 40301  # 403: token not allowed for this topic
TOPIC_NOT_FOUND = 40401  # 404
NOT_ACCEPTABLE = 40601  # 406: Accept header names no type we produce
BODY_TOO_LARGE = 41301  # 413: body larger than ingest.max_body_bytes
TOO_MANY_RECORDS = 41302  # 413: more records than ingest.max_records_per_request
UNSUPPORTED_MEDIA_TYPE = 41501  # 415
NO_RECORD_ACCEPTED = 42206  # 422: request shape wrong, or every record rejected
BUS_UNAVAILABLE = 50301  # 503: the bus refused the whole write; retry

# per record
PARTITION_NOT_FOUND = 40402
VALUE_CONVERSION_FAILED = 42203  # value is not JSON / not base64
INVALID_RECORD = 42206  # value violates the reading contract
BROKER_ERROR = 50002
BROKER_RETRIABLE = 50003

DESCRIPTIONS: dict[int, str] = {
    MALFORMED_JSON: "request body is not valid JSON",
    UNAUTHORIZED: "missing or invalid bearer token",
    FORBIDDEN: "credentials do not allow this topic",
    TOPIC_NOT_FOUND: "topic not found (only ingest topics accept records)",
    NOT_ACCEPTABLE: "Accept header names no media type the gateway produces",
    BODY_TOO_LARGE: "request body larger than ingest.max_body_bytes",
    TOO_MANY_RECORDS: "more records than ingest.max_records_per_request",
    UNSUPPORTED_MEDIA_TYPE: "Content-Type is not a supported embedded format",
    NO_RECORD_ACCEPTED: "request payload invalid, or no record in it was accepted",
    BUS_UNAVAILABLE: "the bus is unavailable; nothing was written, retry",
    PARTITION_NOT_FOUND: "record names a partition the topic does not have",
    VALUE_CONVERSION_FAILED: "record value could not be decoded (JSON or base64)",
    INVALID_RECORD: "record value violates the reading contract",
    BROKER_ERROR: "the bus rejected the record",
    BROKER_RETRIABLE: "the bus failed transiently; retry the record",
}
