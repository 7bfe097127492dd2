"""The dead-letter record contract (version 1): one rejected record on ``topics.deadletter``.

Whoever rejects a record (the ingest gateway at the edge, the lake sink reading the bus, an
actuator site refusing a control command) writes one :class:`DeadLetter` per record, as JSON, so
that one reader can inspect, count or replay them::

    {"schema_version": 1, "source": "gateway", "source_topic": "greenhouse.sensors",
     "source_partition": null, "source_offset": null, "error_code": 42206,
     "reason": "measurements.rh_pct: Input should be less than or equal to 100 (got 140)",
     "received_at": "2026-06-01T12:00:01.250000Z", "payload": {"value": {...}}}

A dead letter can always be written: its ``payload`` is made JSON-safe when the letter is built
(:func:`json_safe`: nesting past :data:`MAX_PAYLOAD_DEPTH` levels is cut, text that is not valid
UTF-8 is replaced, anything that is not JSON becomes its short ``repr``), so a record too strange to
encode still leaves its reason and the outer part of itself.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEADLETTER_SCHEMA_VERSION: Final = 1
MAX_PAYLOAD_DEPTH: Final = 32
"""Objects and arrays nested deeper than this in a payload are replaced by :data:`CUT_MARK`
(JSON encoders refuse ~255 levels; a record that deep is kept for its reason, not its content)."""
CUT_MARK: Final = f"<cut: nested deeper than {MAX_PAYLOAD_DEPTH} levels>"
_MAX_REPR_CHARS = 200


class DeadLetter(BaseModel):
    """One rejected record, with why and where it was rejected."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = DEADLETTER_SCHEMA_VERSION
    source: Literal["gateway", "sink", "actuator"] = Field(description="who rejected the record")
    source_topic: str = Field(description="the topic the record was sent to, or read from")
    source_partition: int | None = Field(default=None, description="bus partition, when it was on the bus")
    source_offset: int | None = Field(default=None, description="bus offset, when it was on the bus")
    error_code: int = Field(description="the ingest error code (42206 contract, 42203 not decodable, ...), or the actuator's refusal code (app.control.dispatch.REFUSAL_CODES)")
    reason: str = Field(description="one line naming the field and the problem")
    received_at: datetime = Field(description="when the record arrived (request time, or bus append time)")
    payload: Any = Field(description="the record as received: at the gateway the REST Proxy record ({'value': ...}); at the sink the bus message value (its JSON, or its text when it is not JSON)")

    @field_validator("payload", mode="before")
    @classmethod
    def _json_safe(cls, value: Any) -> Any:
        return json_safe(value)

    def to_json(self) -> bytes:
        """The bytes written to the dead-letter topic."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        """Parse a dead-letter topic message value."""
        return cls.model_validate_json(raw)


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON data that any encoder takes: objects and arrays past
    :data:`MAX_PAYLOAD_DEPTH` levels become :data:`CUT_MARK`, strings are valid UTF-8, non-finite
    floats and non-JSON objects become short strings. Recursion is bounded by the depth cut."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")  # lone surrogates cannot be encoded
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (dict, list, tuple)):
        if depth >= MAX_PAYLOAD_DEPTH:
            return CUT_MARK
        if isinstance(value, dict):
            return {json_safe(str(k)): json_safe(v, depth + 1) for k, v in value.items()}
        return [json_safe(v, depth + 1) for v in value]
    return repr(value)[:_MAX_REPR_CHARS]
